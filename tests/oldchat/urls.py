from django.urls import include, re_path
from django.views.generic import RedirectView

from .views import BroadcastChatView, GroupChatView, MyGroupsView, NoteToSelfView, UserChatView

urlpatterns = [
    re_path(r"^chat/$", BroadcastChatView.as_view(), name="broadcast_chat"),
    re_path(r"^userchat/$", UserChatView.as_view(), name="user_chat"),
    re_path(r"^groupchat/$", GroupChatView.as_view(), name="group_chat"),
    re_path(r"^notetoself/$", NoteToSelfView.as_view(), name="note_to_self"),
    re_path(r"^mygroups/$", MyGroupsView.as_view(), name="my_groups"),
    re_path(r"^accounts/", include("django.contrib.auth.urls")),
    re_path(r"^$", RedirectView.as_view(url="/chat/")),
]
