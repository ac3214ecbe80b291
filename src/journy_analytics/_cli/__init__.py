"""The ``journy`` commands, one module each; ``journy_analytics.cli`` registers them.

A command module offers ``add_<name>_command(sub)``, which adds its subparser(s) to the
``journy`` parser and sets ``handler`` (``args -> exit status``) as the parser's default.
"""

__all__: list[str] = []
