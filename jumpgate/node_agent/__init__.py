"""The node agent (customer servers): joins with a token, holds the reverse tunnel, serves SSH.

It arrives with the "Sessions" issue. This package may import only ``jumpgate.protocol``
and the libraries a customer's server needs (asyncssh, cryptography); the import-linter
contracts in ``pyproject.toml`` hold it to that.
"""
