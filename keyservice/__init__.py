"""The key holder: one share of each lease's workload root key, released only to a guest the
chain says is Verified under the lease's key policy, after checking its evidence here.

`python -m keyservice init | register | run`; imports `cvm` only (an import-linter contract).
See docs/keyservice.md.
"""
