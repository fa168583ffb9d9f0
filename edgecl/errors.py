"""The one exception type users see.

Raise EdgeclError for bad input (a file, an option, a data layout): the CLI prints its message as a
single line and exits non-zero, without a traceback. The message names the file or option and what
was expected.
"""


class EdgeclError(Exception):
    """A user-facing error whose message is one line naming the file or option at fault."""
