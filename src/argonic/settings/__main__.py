"""``python -m argonic.settings > docs/configuration.md``."""

import sys

from argonic.settings.docs import settings_markdown

sys.stdout.write(settings_markdown())
