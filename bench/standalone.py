"""Running one bench script alone (`python bench/<script>.py`): Django set up as bench/run.py does."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def django_setup() -> str | None:
    """Set Django up for a bench run; returns the temporary var dir made for it (the caller removes it), if any."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")
    os.environ.setdefault("SERVER402_ENV_FILE", "")
    os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret")
    own_var_dir = None if "SERVER402_VAR_DIR" in os.environ else tempfile.mkdtemp(prefix="server402-bench-")
    if own_var_dir:
        os.environ["SERVER402_VAR_DIR"] = own_var_dir
    import django

    django.setup()
    return own_var_dir


def run(main, own_var_dir: str | None) -> None:
    """Run a bench's main() in Django's test environment, then remove the var dir made for it."""
    from django.test.utils import setup_test_environment

    setup_test_environment()
    try:
        main()
    finally:
        if own_var_dir:
            shutil.rmtree(own_var_dir, ignore_errors=True)
