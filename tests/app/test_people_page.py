"""The page for signed-in people (Streamlit's OIDC user, which AppTest can seed): an admin loads models, a user sees
which one is loaded and chats; each sees their own conversations and makes their own API keys."""

from __future__ import annotations

import pytest

from accounts.store import AccountStore
from tests.app.conftest import chat_messages, open_page, run_until, status_text
from tests.support.helpers import KNOWN_ANSWERS
from web import identity

ADA, BOB = "ada@example.org", "bob@example.org"


@pytest.fixture
def people(page_for, models_file, monkeypatch, tmp_path):
    """Pages of a server whose secrets.toml has an [auth] section (so st.login signs people in); ada is an admin."""
    monkeypatch.setattr(identity, "oidc_configured", lambda: True)
    with AccountStore(tmp_path / "accounts.db") as accounts:
        accounts.ensure(ADA)
        accounts.set_role(ADA, "admin")
    first = page_for(models_file)  # signed out: only the way to sign in

    def as_person(email: str | None):
        at = open_page()
        at.user = {"is_logged_in": True, "email": email} if email else {"is_logged_in": False}
        at.run()
        return at

    return first, as_person


def test_before_sign_in_only_the_sign_in_button_is_drawn(people):
    signed_out, _ = people
    assert signed_out.button(key="oidc_sign_in").label == "Sign in"
    assert not signed_out.chat_input and not signed_out.sidebar.selectbox


def test_a_user_sees_the_loaded_model_chats_and_cannot_load(people):
    _, as_person = people
    admin = as_person(ADA)
    run_until(admin, "Demo MoE (tiny, bundled)** ready")  # the admin's page loads the default, as before accounts
    assert admin.button(key="unload_model") and admin.selectbox(key="model_choice")
    user = as_person(BOB)
    assert "Demo MoE (tiny, bundled)** ready" in status_text(user)
    assert not [s for s in user.sidebar.selectbox if s.key == "model_choice"]
    assert not [b for b in user.button if b.key in ("unload_model", "load_model")]
    assert any("Only an admin loads or switches models" in c.value for c in user.sidebar.caption)
    assert any(f"Signed in as **{BOB}** (user)" in c.value for c in user.sidebar.caption)
    user.chat_input[0].set_value("Hello").run()
    assert chat_messages(user)[-1] == ("assistant", KNOWN_ANSWERS["Hello"])
    assert [b.label for b in user.sidebar.button if b.key.startswith("open_")] == ["Hello (2)"]
    admin.run()
    assert not [b for b in admin.sidebar.button if b.key.startswith("open_")]  # Bob's chat is Bob's


def test_a_person_makes_an_api_key_that_is_shown_once_and_revokes_it(people):
    _, as_person = people
    user = as_person(BOB)
    user.text_input(key="api_key_label").set_value("laptop")
    user.button(key="api_key_create").click().run()
    shown = [c.value for c in user.sidebar.code if str(c.value).startswith("mc_")]
    assert len(shown) == 1
    with AccountStore(identity.identity().accounts.path) as accounts:
        assert accounts.key_owner(shown[0]).name == BOB
    user.run()
    assert not [c for c in user.sidebar.code if str(c.value).startswith("mc_")]  # once only
    (info,) = [c.value for c in user.sidebar.caption if "**laptop**" in c.value]
    assert "last used" in info
    revoke = [b for b in user.sidebar.button if b.key.startswith("api_key_revoke_")]
    revoke[0].click().run()
    assert any("**laptop**" in c.value and "revoked" in c.value for c in user.sidebar.caption)
    with AccountStore(identity.identity().accounts.path) as accounts:
        assert accounts.key_owner(shown[0]) is None


def test_an_admin_disables_a_user_who_is_then_signed_out_and_only_an_admin_sees_the_accounts(people):
    _, as_person = people
    user = as_person(BOB)
    assert not [b for b in user.sidebar.button if b.key.startswith("account_")]
    admin = as_person(ADA)
    assert not [b for b in admin.sidebar.button if b.key == f"account_disable_{ADA}"]  # not one's own
    admin.button(key=f"account_disable_{BOB}").click().run()
    assert any(f"**{BOB}** · user · disabled" in c.value for c in admin.sidebar.caption)
    user.run()
    assert not user.chat_input and user.button(key="oidc_sign_in")  # a disabled person is signed out
    admin.button(key=f"account_disable_{BOB}").click().run()
    admin.button(key=f"account_role_{BOB}").click().run()
    assert any(f"**{BOB}** · admin · active" in c.value for c in admin.sidebar.caption)
