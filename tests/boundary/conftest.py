import os

from .fuzz import limit_memory

if os.environ.get("CLAID_FUZZ_SUBPROCESS"):  # the fuzzers' own process: bounded memory
    limit_memory()
