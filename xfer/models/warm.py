"""Imported by the warm kernel server at its start (`xfer.kernel.PRELOAD`): the tokenizer of the
checkpoint named in XFER_WARM_TOKENIZER, kept by `load_tokenizer`, so each kernel forked from the
server finds it loaded instead of spending about 2 s on XLM-R's 250k pieces."""

import os

from xfer.models import load_tokenizer

if os.environ.get("XFER_WARM_TOKENIZER"):
    try:
        load_tokenizer(os.environ["XFER_WARM_TOKENIZER"])
    except Exception:  # noqa: BLE001 - the server must start regardless; each kernel then loads its own
        pass
