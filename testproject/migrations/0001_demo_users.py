"""Creates the demo users john and mary (password: demo) and the group "staff"."""

from django.contrib.auth.hashers import make_password
from django.db import migrations

DEMO_USERS = ("john", "mary")


def create_demo_users(apps, schema_editor):
    User = apps.get_model("auth", "User")
    Group = apps.get_model("auth", "Group")
    staff, _ = Group.objects.get_or_create(name="staff")
    for name in DEMO_USERS:
        user, created = User.objects.get_or_create(username=name)
        if created:
            user.password = make_password("demo")
            user.save()
        if name == "john":
            user.groups.add(staff)


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_demo_users, migrations.RunPython.noop)]
