"""Settings for daphne subprocesses that need more than environment variables.

``WS4REDIS_TEST_SETTINGS`` holds a JSON object of settings to override, e.g.
``{"WS4REDIS_ALLOWED_CHANNELS": "tests.policies.subscribe_only"}``.
"""

import json
import os

from testproject.settings import *  # noqa: F403

globals().update(json.loads(os.environ.get("WS4REDIS_TEST_SETTINGS", "{}")))
