# myapp/signals.py, imported by your AppConfig.ready()
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

import journy_analytics


@receiver(user_logged_in)
def group_at_login(sender, request, user, **kwargs):
    for account_id in accounts_of(user):  # your lookup: the accounts the user is part of
        journy_analytics.group(user_id=str(user.pk), group_id=account_id)


# The test app's stand-in for the lookup: dora (a user of that test only) is in globex.
ACCOUNTS = {"dora": ["globex"]}


def accounts_of(user):
    return ACCOUNTS.get(user.get_username(), [])
