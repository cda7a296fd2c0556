"""A Base Sepolia that exists only in this process: the sandbox facilitator's view of the chain.

The x402 SDK's facilitator scheme (ExactEvmFacilitatorScheme) does all of the
EIP-3009 checking: domain, recipient, amount, validity window and the
signature itself, recovered with eth-keys. What it asks of a chain is small:
whether an address holds code, the result of simulating
`transferWithAuthorization`, and sending it. This class answers those offline,
so the sandbox verifies real signatures without an RPC node:

- the USDC contract is the only address with code; every payer is a plain
  account (EOA), so signatures are checked by ecrecover;
- simulated transfers succeed: every sandbox payer is funded, and nonce reuse is
  refused by Server402's own (payer, nonce) ledger before settlement is asked;
- a "sent" transfer gets a sandbox transaction id derived from the
  authorization, and its receipt carries the ERC-20 Transfer event the SDK
  checks, so settlement runs the SDK's own receipt validation.
"""

import threading
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from x402.mechanisms.evm.constants import TX_STATUS_SUCCESS
from x402.mechanisms.evm.exact.eip3009_utils import ERC20_TRANSFER_EVENT_TOPIC
from x402.mechanisms.evm.types import TransactionReceipt, TypedDataDomain, TypedDataField

# The sandbox facilitator's own address (it pays no gas, but the SDK lists its signers).
SANDBOX_FACILITATOR_ADDRESS = "0x5e4D60A1a7e0c1a2B3C4d5E6f708192A3b4C5d6E"
# What every sandbox payer holds: enough USDC that balance is never the reason a call fails.
SANDBOX_BALANCE = 10**15


def _topic(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


class SandboxChain:
    """An offline FacilitatorEvmSigner (x402.mechanisms.evm.signer) for one USDC contract."""

    def __init__(self, *, asset: str, chain_id: int, token_name: str, token_version: str):
        self._asset = to_checksum_address(asset)
        self._chain_id = chain_id
        self._token_name = token_name
        self._token_version = token_version
        self._transfers: dict[str, tuple[str, str, int]] = {}
        self._lock = threading.Lock()

    def get_addresses(self) -> list[str]:
        return [SANDBOX_FACILITATOR_ADDRESS]

    def get_chain_id(self) -> int:
        return self._chain_id

    def get_code(self, address: str) -> bytes:
        return b"\x60\x80" if to_checksum_address(address) == self._asset else b""

    def get_balance(self, address: str, token_address: str) -> int:
        return SANDBOX_BALANCE

    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        if to_checksum_address(address) != self._asset:
            raise RuntimeError(f"the sandbox chain has no contract at {address}")
        answers = {
            "transferWithAuthorization": None,  # the simulation succeeds (see module docstring)
            "authorizationState": False,
            "balanceOf": SANDBOX_BALANCE,
            "name": self._token_name,
            "version": self._token_version,
        }
        if function_name not in answers:
            raise RuntimeError(f"the sandbox chain cannot answer {function_name}()")
        return answers[function_name]

    def verify_typed_data(self, address: str, domain: TypedDataDomain, types: dict[str, list[TypedDataField]],
                          primary_type: str, message: dict[str, Any], signature: bytes) -> bool:
        typed = encode_typed_data(
            domain_data={"name": domain.name, "version": domain.version, "chainId": domain.chain_id,
                         "verifyingContract": domain.verifying_contract},
            message_types={name: [{"name": f.name, "type": f.type} for f in fields] for name, fields in types.items()},
            message_data=message,
        )
        try:
            return Account.recover_message(typed, signature=signature).lower() == address.lower()
        except ValueError:
            return False

    def write_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any,
                       data_suffix: str | None = None) -> str:
        if function_name != "transferWithAuthorization" or to_checksum_address(address) != self._asset:
            raise RuntimeError(f"the sandbox chain cannot send {function_name}() to {address}")
        payer, payee, value, _valid_after, _valid_before, nonce = args[:6]
        # One authorization, one transaction id: settling it again names the same transfer.
        transaction = "0x" + keccak(b"server402-sandbox:" + bytes.fromhex(payer[2:]) + bytes(nonce)).hex()
        with self._lock:
            self._transfers[transaction] = (payer, payee, int(value))
        return transaction

    def send_transaction(self, to: str, data: bytes) -> str:
        raise RuntimeError("the sandbox chain deploys no smart wallets")

    def wait_for_transaction_receipt(self, tx_hash: str) -> TransactionReceipt:
        with self._lock:
            payer, payee, value = self._transfers.pop(tx_hash)
        transfer = {"address": self._asset, "topics": [ERC20_TRANSFER_EVENT_TOPIC, _topic(payer), _topic(payee)],
                    "data": "0x" + value.to_bytes(32, "big").hex()}
        return TransactionReceipt(status=TX_STATUS_SUCCESS, block_number=0, tx_hash=tx_hash, logs=[transfer])
