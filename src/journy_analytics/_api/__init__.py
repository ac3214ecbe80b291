"""journy.io's REST API (``https://api.journy.io``): ``JournyAPI`` and ``AsyncJournyAPI``.

The contract is journy.io's OpenAPI document (``tests/data/journy-io-openapi.yaml``);
docs/journy-api.md says where the client departs from it and why.
"""

from journy_analytics._api._body import domain_name, user_identification
from journy_analytics._api._client import AsyncJournyAPI, JournyAPI
from journy_analytics._api._command import add_api_commands, run_api_command
from journy_analytics._api._errors import JournyAPIError, KeyInfo

__all__ = [
    "AsyncJournyAPI",
    "JournyAPI",
    "JournyAPIError",
    "KeyInfo",
    "add_api_commands",
    "domain_name",
    "run_api_command",
    "user_identification",
]
