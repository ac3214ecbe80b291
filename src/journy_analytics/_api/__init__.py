"""journy.io's REST API (``https://api.journy.io``): ``JournyAPI`` and ``AsyncJournyAPI``.

The contract is journy.io's OpenAPI document (``tests/data/journy-io-openapi.yaml``);
docs/journy-api.md says where the client departs from it and why.
"""

from journy_analytics._api._client import AsyncJournyAPI, JournyAPI
from journy_analytics._api._errors import JournyAPIError, KeyInfo

__all__ = ["AsyncJournyAPI", "JournyAPI", "JournyAPIError", "KeyInfo"]
