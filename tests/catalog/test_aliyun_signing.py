"""The signer against the vectors computed with Alibaba Cloud's own SDKs."""

import pytest

from catalog import aliyun_signing as signing

AK, SECRET = "LTAI5tTestAccessKeyId", "TestAccessKeySecret0123456789ab"
IMG = (
    "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/imagerecog/"
    "RecognizeVehicleType/a b+c*~é.jpg?x=1&y=2"
)
COMMON = {
    "AccessKeyId": AK,
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "c0ffee00c0ffee00c0ffee00c0ffee00",
    "SignatureVersion": "1.0",
    "Timestamp": "2024-01-02T03:04:05Z",
}

V1 = {
    "V1-A": ("GET", {
        "AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26",
    }, "testsecret", "OLeaidS1JvxuMvnyHOwuJ+uX5qY="),
    "V1-B": ("GET", {
        **COMMON, "Action": "GetAsyncJobResult", "Format": "json", "Version": "2019-09-30",
        "JobId": "E3D9E4E2-8D5B-4E51-9C5B-2D1E0A8F5B11",
    }, SECRET, "wCCboUGmT6EDVC2SAvfQ4QPAlmM="),
    "V1-C": ("POST", {
        **COMMON, "Action": "RecognizeVehicleType", "Format": "json", "Version": "2019-09-30", "ImageURL": IMG,
    }, SECRET, "6VA1uGc4Tpnwvwov/KzKLhsI0Z0="),
    "V1-D": ("POST", {
        **COMMON, "Action": "DetectCelebrity", "Format": "JSON", "Version": "2019-12-30", "RegionId": "cn-shanghai",
        "SignatureType": "", "ImageURL": "http://viapi-test.oss-cn-shanghai.aliyuncs.com/celebrity.jpg",
    }, SECRET, "oYfidDKXojx3bCWRwefZgfMdoEc="),
}


@pytest.mark.parametrize("vector", sorted(V1))
def test_it_reproduces_the_sdk_hmac_sha1_signature(vector):
    method, params, secret, expected = V1[vector]
    assert signing.rpc_signature(method, params, secret) == expected


def test_it_builds_the_documented_string_to_sign():
    method, params, _, _ = V1["V1-C"]
    assert signing.rpc_string_to_sign(method, params) == (
        "POST&%2F&AccessKeyId%3DLTAI5tTestAccessKeyId%26Action%3DRecognizeVehicleType%26Format%3Djson%26"
        "ImageURL%3Dhttps%253A%252F%252Fviapi-test.oss-cn-shanghai.aliyuncs.com%252Fviapi-3.0domepic%252F"
        "imagerecog%252FRecognizeVehicleType%252Fa%2520b%252Bc%252A~%25C3%25A9.jpg%253Fx%253D1%2526y%253D2%26"
        "SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dc0ffee00c0ffee00c0ffee00c0ffee00%26"
        "SignatureVersion%3D1.0%26Timestamp%3D2024-01-02T03%253A04%253A05Z%26Version%3D2019-09-30"
    )


def test_it_leaves_the_signature_parameter_out_of_what_it_signs():
    method, params, secret, expected = V1["V1-B"]
    assert signing.rpc_signature(method, {**params, "Signature": "anything"}, secret) == expected


def test_it_encodes_like_alibaba():
    assert signing.percent_encode("a b*~é+/") == "a%20b%2A~%C3%A9%2B%2F"


ACS3_HEADERS = {
    "host": "imagerecog.cn-shanghai.aliyuncs.com",
    "x-acs-version": "2019-09-30",
    "x-acs-date": "2024-01-02T03:04:05Z",
    "x-acs-signature-nonce": "c0ffee00c0ffee00c0ffee00c0ffee00",
}
V3B_BODY = (
    b"ImageURL=https%3A%2F%2Fviapi-test.oss-cn-shanghai.aliyuncs.com%2Fviapi-3.0domepic%2Fimagerecog%2F"
    b"RecognizeVehicleType%2Fa+b%2Bc%2A~%C3%A9.jpg%3Fx%3D1%26y%3D2"
)


def test_it_reproduces_the_sdk_acs3_signature_of_a_get():
    headers = {**ACS3_HEADERS, "x-acs-action": "GetAsyncJobResult", "x-acs-content-sha256": signing.sha256_hex(b"")}
    assert headers["x-acs-content-sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    signature = signing.acs3_signature(
        "GET", {"JobId": "E3D9E4E2-8D5B-4E51-9C5B-2D1E0A8F5B11"}, headers, headers, b"", SECRET)
    assert signature == "dc2e5f9b06fc8ca9f622dcd6b0a309de18a515d59ed15a2df0b50d8f2b3d081b"


def test_it_reproduces_the_sdk_acs3_signature_of_a_form_post():
    headers = {
        **ACS3_HEADERS,
        "x-acs-action": "RecognizeVehicleType",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-content-sha256": signing.sha256_hex(V3B_BODY),
    }
    assert headers["x-acs-content-sha256"] == "9497d634bfb5c9c40f938663052827eb51a3b660a6071a28918f615eafaf1c3b"
    signature = signing.acs3_signature("POST", {}, headers, headers, V3B_BODY, SECRET)
    assert signature == "ac5888eb7efa7365588414578966f95cecf61eb17fb22ec70ebc5eaf9dac39a1"


def test_it_round_trips_an_acs3_authorization_header():
    header = signing.acs3_authorization(AK, ["x-acs-date", "host"], "abc")
    assert header == f"ACS3-HMAC-SHA256 Credential={AK},SignedHeaders=host;x-acs-date,Signature=abc"
    assert signing.acs3_parse_authorization(header) == {
        "Credential": AK, "SignedHeaders": "host;x-acs-date", "Signature": "abc"}
    assert signing.acs3_parse_authorization("Bearer abc") is None
