# Django settings of the chat project (django-websocket-redis 0.6, migrated).
import os

BASE_DIR = os.path.dirname(os.path.abspath(__file__))

DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECRET_KEY = "super.secret"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB", os.path.join(BASE_DIR, "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
ROOT_URLCONF = "tests.oldchat.urls"
STATIC_URL = "/static/"
LOGIN_REDIRECT_URL = "/chat/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(BASE_DIR, "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.template.context_processors.static",
                "django.template.context_processors.request",
                "ws4redis.context_processors.default",
            ],
        },
    },
]

# migration step 1: "ws4redis" became "daphne", "channels" and "ws4redis_channels"
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "ws4redis_channels",
    "tests.oldchat",
]

# These middleware classes must be present, if messages sent or received through a websocket
# connection shall be delivered to an authenticated Django user.
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

# migration step 2: WSGI_APPLICATION = 'ws4redis.django_runserver.application' became
ASGI_APPLICATION = "tests.oldchat.asgi.application"

# URL that distinguishes websocket connections from normal requests
WEBSOCKET_URL = "/ws/"

WS4REDIS_CONNECTION = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Set the number of seconds each message shall persited
WS4REDIS_EXPIRE = 3600

WS4REDIS_HEARTBEAT = "--heartbeat--"

WS4REDIS_PREFIX = "demo"

# migration step 3: the channel names django-websocket-redis 0.3 to 0.6 publish on
WS4REDIS_NAMING = "typed"

# migration step 4: who may publish (0.6 let everybody publish everywhere)
WS4REDIS_OPEN_FACILITIES = ["foobar", "unittest"]
