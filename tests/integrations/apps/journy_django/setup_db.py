"""Create the SQLite database and the test users (run once before the server starts)."""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "journy_django.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)
for name in sys.argv[1:]:
    user = User.objects.create(username=name)
    print(f"{name} {user.pk}")
