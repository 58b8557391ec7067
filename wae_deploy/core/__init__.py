"""The ground floor: what every part of wae-deploy shares and nothing of it needs.

Errors and exit codes (errors), atomic writes (atomic), file hashes (hashing), the cache folder
(cache), the optional installs and their hints (extras), the named reference checkpoints and
their suites (registry) and the version.

May import: the standard library and numpy only; never another wae_deploy package.
"""

__version__ = "0.1.0"
