"""The ``journy`` commands, one module each; ``journy_analytics.cli`` registers them.

A command module offers ``add_<name>_command(sub)``, which adds its subparser(s) to the
``journy`` parser and sets ``handler`` (``args -> exit status``) as the parser's default.
"""

from journy_analytics._cli.collector import add_collector_command
from journy_analytics._cli.demo import add_demo_command
from journy_analytics._cli.query import add_query_commands

__all__ = ["add_collector_command", "add_demo_command", "add_query_commands"]
