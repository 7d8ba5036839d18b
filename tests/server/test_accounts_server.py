"""People instead of sessions, against `streamlit run app.py` with built-in accounts (and, below, behind a proxy):
raw websockets and HTTP, as a stranger, a user and an admin would send them."""

from __future__ import annotations

import json
import time

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit_ws import Session
from websockets.exceptions import InvalidStatus

from accounts.store import AccountStore
from tests.server.conftest import RANDOM_MODEL, run
from tests.support.accounts import add_account, http, sign_in
from tests.support.helpers import write_models_toml
from tests.support.server import running_server

pytestmark = pytest.mark.slow
ADMIN, USER = ("ada", "ada-password-1"), ("bob", "bob-password-1")


def ready(page) -> bool:
    return page.chat_input() is not None


def wait_loaded(log, marker: str = f"start-up load of {RANDOM_MODEL}") -> None:
    deadline = time.monotonic() + 90
    while marker not in log.read_text():
        assert time.monotonic() < deadline, "the start-up load never ended"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory, random_model_dir):
    home = tmp_path_factory.mktemp("accounts")
    models = write_models_toml(home / "models.toml", RANDOM_MODEL, "WS random MoE", random_model_dir)
    models.write_text(models.read_text() + "preload = true\n")
    env = {"MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu",
           "MOE_CHAT_MODELS_FILE": str(models), "MOE_CHAT_DEFAULT_MODEL": RANDOM_MODEL, "MOE_CHAT_MAX_NEW_TOKENS": "8"}
    printed = add_account(env, *ADMIN, admin=True)
    assert "first account: restart the app" in printed
    add_account(env, *USER)
    with running_server(home / "server.log", env) as url:
        wait_loaded(home / "server.log")
        yield {"url": url, "log": home / "server.log", "accounts": home / "accounts.db"}


def test_before_sign_in_only_the_form_is_served(accounts_server):
    url = accounts_server["url"]
    status, headers, _ = http(url + "/")
    assert (status, headers["location"]) == (303, "/signin")
    assert http(url + "/?c=anything")[0] == 303
    assert http(url + "/_stcore/host-config")[0] == 401
    status, _, body = http(url + "/signin")
    assert status == 200 and b'name="password"' in body
    assert http(url + "/_stcore/health")[0] == 200
    status, _, body = http(url + "/_stcore/upload_file/some-session/some-file", data=b"x" * 1000, method="PUT")
    assert status == 401, body
    with pytest.raises(InvalidStatus) as refused:
        run(Session.open(url, ready=ready, timeout_s=20))
    assert refused.value.response.status_code == 403
    forged = {"Cookie": "moe_chat_session=" + "A" * 43}
    with pytest.raises(InvalidStatus):
        run(Session.open(url, headers=forged, ready=ready, timeout_s=20))
    started = time.perf_counter()
    wrong = http(url + "/signin", data=b"name=ada&password=not-it-at-all")
    print(f"wrong password answered in {time.perf_counter() - started:.2f} s")
    assert wrong[0] == 401 and b"Wrong name or password" in wrong[2]
    unknown = http(url + "/signin", data=b"name=nobody&password=not-it-at-all")
    assert unknown[0] == 401 and b"Wrong name or password" in unknown[2]  # the same answer: no name is told
    assert "sign-in refused for 'nobody'" in accounts_server["log"].read_text()  # the reason is in the log
    for forged in ({"Origin": "null"}, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, _, _ = http(url + "/signin", data=b"name=ada&password=ada-password-1", headers=forged)
        assert status == 403, forged  # another site's form cannot sign anyone in (or out)
    tries = [http(url + "/signin", data=b"name=mallory&password=guess-number-" + bytes([48 + i]))[0]
             for i in range(4)]
    assert tries == [401, 401, 401, 429]  # after three wrong passwords for a name, the next waits


def test_a_signed_in_user_gets_the_page_and_a_replayed_token_is_refused_after_sign_out(accounts_server):
    url = accounts_server["url"]
    started = time.perf_counter()
    cookie = sign_in(url, *USER)
    print(f"sign-in took {time.perf_counter() - started:.2f} s")

    async def scenario():
        tab = await Session.open(url, headers={"Cookie": cookie}, ready=ready)
        named = any("Signed in as **bob** (user)" in t for t in tab.last.texts())
        status, headers, _ = http(url + "/signout", data=b"", headers={"Cookie": cookie})
        after = await tab.replay([])  # the open tab's next run: the sign-in has ended
        try:
            await Session.open(url, headers={"Cookie": cookie}, ready=ready, timeout_s=20)
            replayed = "accepted"
        except InvalidStatus as exc:
            replayed = exc.response.status_code
        await tab.close()
        return named, status, headers.get("set-cookie", ""), after, replayed

    named, status, cleared, after, replayed = run(scenario())
    assert named
    assert status == 303 and "moe_chat_session=" in cleared and "Max-Age=0" in cleared.replace("max-age", "Max-Age")
    assert after.chat_input() is None and any("signed out" in t for t in after.texts())
    assert replayed == 403


def test_a_user_replaying_an_admins_widgets_changes_nothing(accounts_server):
    url = accounts_server["url"]
    admin_cookie, user_cookie = sign_in(url, *ADMIN), sign_in(url, *USER)

    async def scenario():
        admin = await Session.open(url, headers={"Cookie": admin_cookie}, ready=ready)
        user = await Session.open(url, headers={"Cookie": user_cookie}, ready=ready)
        page = admin.last
        unload, load = page.widget("button", "Unload"), page.widget("button", "Reload")
        picker = page.widget("selectbox", "Model")
        server_url = page.widget("text_input", "Server address")
        user_sees_picker = user.last.widget("selectbox", "Model") is not None
        asked = any("Only an admin loads" in t for t in user.last.texts())
        options_before = list(picker.options)
        replays = [[WidgetState(id=unload.id, trigger_value=True)],
                   [WidgetState(id=picker.id, int_value=0), WidgetState(id=load.id, trigger_value=True)],
                   [WidgetState(id=server_url.id, string_value="http://127.0.0.1:9/v1"),
                    WidgetState(id="$$ID-add_server", trigger_value=True)]]
        for widgets in replays:
            await user.replay(widgets)
        time.sleep(1.0)
        after = await admin.replay([])
        state = [t for t in after.texts() if "ready" in t or "loading" in t or "No model" in t]
        await admin.close()
        await user.close()
        return user_sees_picker, asked, options_before, list(after.widget("selectbox", "Model").options), state

    user_sees_picker, asked, before, after, state = run(scenario())
    assert not user_sees_picker and asked
    assert before == after  # no server was added
    assert any("ready" in t for t in state), state  # the model stayed loaded: no unload, no reload
    assert "unloaded" not in accounts_server["log"].read_text().lower()


def test_api_keys_are_each_users_and_an_admins_calls_need_an_admins_key(accounts_server):
    url = accounts_server["url"]
    with AccountStore(accounts_server["accounts"]) as accounts:
        user_info, user_key = accounts.create_key(USER[0], "script")
        _, admin_key = accounts.create_key(ADMIN[0], "ops")

    def call(key: str, path: str = "/v1/models", body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        return http(url + path, data=data, headers={"Authorization": f"Bearer {key}",
                                                    "Content-Type": "application/json"})

    assert call(user_key)[0] == 200
    status, _, body = call(user_key, "/v1/moe-chat/model", {"model": None})
    assert status == 403 and json.loads(body)["error"]["code"] == "insufficient_permissions"
    assert call("mc_00000000_" + "x" * 43)[0] == 401
    with AccountStore(accounts_server["accounts"]) as accounts:
        assert accounts.keys(USER[0])[0].last_used is not None  # shown as its last use in the page
        assert accounts.revoke_key(USER[0], user_info.key_id)
    status, _, body = call(user_key)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, body = call(admin_key, "/v1/moe-chat/model", {"model": None})
    assert status == 200 and json.loads(body) == {"state": "empty", "model": None}
    status, _, body = call(admin_key, "/v1/moe-chat/model", {"model": RANDOM_MODEL})
    assert status == 200 and json.loads(body)["model"] == RANDOM_MODEL


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("proxied")
    env = {"MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu",
           "MOE_CHAT_PROXY_USER_HEADER": "X-Forwarded-User", "MOE_CHAT_PROXY_SECRET": "proxy-shared-secret"}
    with running_server(home / "server.log", env) as url:
        yield {"url": url, "log": home / "server.log"}


def test_behind_a_proxy_a_forged_user_header_without_the_secret_is_ignored(proxied_server):
    url = proxied_server["url"]
    assert http(url + "/", headers={"X-Forwarded-User": "eve"})[0] == 401
    with pytest.raises(InvalidStatus):
        run(Session.open(url, headers={"X-Forwarded-User": "eve"}, ready=ready, timeout_s=20))
    wrong = {"X-Forwarded-User": "eve", "X-MoE-Chat-Proxy-Secret": "guess"}
    with pytest.raises(InvalidStatus):
        run(Session.open(url, headers=wrong, ready=ready, timeout_s=20))

    async def through_the_proxy():
        tab = await Session.open(url, headers={"X-Forwarded-User": "Carol@Example.org",
                                               "X-MoE-Chat-Proxy-Secret": "proxy-shared-secret"}, ready=ready)
        texts = tab.last.texts()
        await tab.close()
        return texts

    texts = run(through_the_proxy())
    assert any("Signed in as **carol@example.org** (user)" in t for t in texts), texts
    assert "ignored a x-forwarded-user header that came without the proxy's secret" in proxied_server["log"].read_text()
