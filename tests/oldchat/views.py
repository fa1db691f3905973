from django.contrib.auth.models import Group, User
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.generic.base import TemplateView, View

from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage


class BroadcastChatView(TemplateView):
    template_name = "broadcast_chat.html"

    def get(self, request, *args, **kwargs):
        welcome = RedisMessage(
            "Hello everybody"
        )  # create a welcome message to be sent to everybody
        RedisPublisher(facility="foobar", broadcast=True).publish_message(welcome)
        return super().get(request, *args, **kwargs)


@method_decorator(csrf_exempt, name="dispatch")
class UserChatView(TemplateView):
    template_name = "user_chat.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(users=User.objects.all())
        return context

    def post(self, request, *args, **kwargs):
        redis_publisher = RedisPublisher(facility="foobar", users=[request.POST.get("user")])
        message = RedisMessage(request.POST.get("message"))
        redis_publisher.publish_message(message)
        return HttpResponse("OK")


@method_decorator(csrf_exempt, name="dispatch")
class GroupChatView(TemplateView):
    template_name = "group_chat.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(groups=Group.objects.all())
        return context

    def post(self, request, *args, **kwargs):
        redis_publisher = RedisPublisher(facility="foobar", groups=[request.POST.get("group")])
        message = RedisMessage(request.POST.get("message"))
        redis_publisher.publish_message(message)
        return HttpResponse("OK")


@method_decorator(csrf_exempt, name="dispatch")
class NoteToSelfView(View):
    """Publishes to the logged-in user's own sockets, and to their groups."""

    def post(self, request, *args, **kwargs):
        audience = {"users": [SELF]}
        if request.POST.get("groups"):
            audience["groups"] = [SELF]
        redis_publisher = RedisPublisher(facility="foobar", request=request, **audience)
        redis_publisher.publish_message(RedisMessage(request.POST.get("message")))
        return HttpResponse("OK")


class MyGroupsView(View):
    """The groups django-websocket-redis 0.6 stored in the session when the user logged in."""

    def get(self, request, *args, **kwargs):
        return JsonResponse({"memberof": request.session.get("ws4redis:memberof", [])})
