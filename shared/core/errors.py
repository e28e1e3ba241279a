"""The one exception type the CLI turns into a one-line error message."""


class HRMError(Exception):
    """A problem with the user's input (path, file, option) described in one line with its fix."""
