"""The exit codes of every `bastion` subcommand, defined once.

Those of `bastion serve` are the README's ("Rate limits, concurrency,
cancellation"): 0 stopped cleanly, 1 stopped but server_stop is not in the audit
log, 2 a policy error, 3 a refusal to serve. The other subcommands use the same
numbers for the same meanings; argparse itself exits 2 on a usage error.
"""

from __future__ import annotations

OK = 0  # done: served and stopped cleanly, chain verified, the policy can be served, ...
STOP_UNRECORDED = 1  # serve: served and stopped, but the audit log could not take server_stop
AUDIT_PROBLEM = 1  # audit verify: the chain has a problem (the first one is printed)
CONFIG = 2  # a policy error, a bad argument or an unreadable input: nothing was started
REFUSED = 3  # refusal to serve (a required sandbox layer, the audit log or a preflight check failed)
TIMED_OUT = 124  # sandbox run: the program outlived --timeout and was killed (as timeout(1) reports it)
SIGNALLED = 128  # sandbox run: a program killed by signal N exits SIGNALLED + N (as a shell reports it)
