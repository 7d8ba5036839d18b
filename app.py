"""MoE Chat: the page. Composes the components around the engine, which does all model work."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from accounts.people import LOCAL, NONE, OIDC, PROXY, Person
from chat_engine.engine import Engine, shared_engine
from common import sessions
from common.errors import MoEChatError
from common.settings import Settings, cache_dir_origin
from components import (
    account_admin,
    account_panel,
    api_panel,
    conversations,
    gate,
    generation_panel,
    load_panel,
    notices,
    plan_panel,
    sidebar,
    state,
    turn,
)
from components.journal import Journal
from conversations.store import ConversationStore
from model_loader.devices import DeviceFacts, probe_devices
from model_loader.disk import disk_room
from model_loader.memory import snapshot
from model_loader.placement import offload_folder, plan_placement
from model_loader.registry import ModelSpec, Registry, checked_server_url, load_registry
from planner.machine_fit import fit_for, gpu_sizes
from web import pass_cookie
from web.config import app_settings
from web.identity import SESSION_COOKIE, identity


def get_settings() -> Settings:
    """The settings the server resolved at start (environment, then secrets.toml), the same for page and API."""
    return app_settings()


@st.cache_resource
def get_devices() -> DeviceFacts:
    return probe_devices()


def get_engine() -> Engine:
    """The one engine of this server process, shared by every browser session. It is not a cached resource: any
    session may ask Streamlit to clear its caches, and that must not unload the model for everyone."""
    return shared_engine(get_settings())


@st.cache_resource
def get_store() -> ConversationStore:
    """The conversations database, shared by every session (thread-safe); its search index is built (or its build
    resumed) in the background."""
    store = ConversationStore(get_settings().db)
    store.index.build_in_background()
    return store


def current_registry(settings: Settings) -> Registry:
    """The registry, with the folders this session added that can still be read (a vanished one is dropped), and
    the model servers it added."""
    registry = load_registry(settings.models_file)
    for server in st.session_state.get(state.SERVERS, []):
        registry, _ = registry.with_server(*server, allowed_hosts=settings.allowed_server_hosts())
    kept = []
    for folder in st.session_state.get(state.LOCAL_FOLDERS, []):
        try:
            registry, _ = registry.with_local_folder(folder, settings.allowed_model_roots())
        except MoEChatError as exc:
            st.session_state[state.NOTICE] = f"A model folder you added is gone from the list: {exc}"
        else:
            kept.append(folder)
    st.session_state[state.LOCAL_FOLDERS] = kept
    return registry


def add_row(session_key: str, item: object, add: Callable[[], tuple[Registry, ModelSpec]]) -> None:
    """A folder or server the user added: remembered for this session and selected, or the reason it is not."""
    try:
        _, added = add()
    except MoEChatError as exc:
        st.error(str(exc), icon=":material/error:")
    else:
        st.session_state[session_key].append(item)
        st.session_state[state.PENDING_CHOICE] = added.id
        st.rerun()


class ModelControls:
    """What the page may do to the shared model, checked against the person's role where it is done (a replayed
    widget of an admin's page changes nothing for anyone else)."""

    def __init__(self, engine: Engine, person: Person) -> None:
        self.engine, self.person = engine, person

    def start_load(self, spec: ModelSpec, options: object = None) -> None:
        self.person.require("manage_models")
        self.engine.start_load(spec, options)

    def unload(self) -> None:
        self.person.require("manage_models")
        self.engine.unload()

    def cancel_job(self) -> None:
        self.person.require("manage_models")
        self.engine.cancel_job()


def remember_password() -> None:
    """Have this browser remember that it was given the page password (a one-time ticket for an HttpOnly cookie)."""
    gate.remember_in_browser(pass_cookie.ticket(), pass_cookie.PASS_PATH.lstrip("/"))


def who_is_here(settings: Settings, session_id: str) -> Person | None:
    """The person this page belongs to, or None (then only a way to sign in is drawn)."""
    ident = identity()
    if ident.mode == NONE:
        given = pass_cookie.remembered(st.context.cookies.get(pass_cookie.PASS_COOKIE), settings.password)
        return LOCAL if gate.render(settings.password, session_id, given, remember_password) else None
    if ident.mode == PROXY:
        person = ident.from_proxy({k.lower(): v for k, v in st.context.headers.items()})
    elif ident.mode == OIDC:
        person = ident.from_oidc(st.user.get("email") if st.user.get("is_logged_in") else None,
                                 st.user.get("email_verified"))
    else:
        person = ident.from_cookie(st.context.cookies)
    if person is None:
        account_panel.render_signed_out(ident.mode, st.login)
        return None
    sessions.allow(session_id)
    return person


def sign_out(accounts: object) -> None:
    """End the sign-in of this tab's cookie (every tab of this browser shares it)."""
    if accounts is not None:
        accounts.sign_out(st.context.cookies.get(SESSION_COOKIE))


def model_sidebar(engine: Engine, registry: Registry, settings: Settings, devices: DeviceFacts,
                  person: Person) -> Registry:
    """Model picker, will-it-fit, load options and status; returns the registry with any folder the user added.
    A person who may not manage models sees the status only."""
    if not person.may("manage_models"):
        load_panel.render_job_or_outcome(engine.job, None)
        sidebar.render_status(engine.status())
        st.caption("Only an admin loads or switches models: ask one for another.")
        return registry
    controls = ModelControls(engine, person)
    if not st.session_state[state.AUTOLOADED]:
        st.session_state[state.AUTOLOADED] = True
        default = registry.get(st.session_state[state.MODEL_CHOICE])
        if default.preload and engine.status().state == "empty":
            engine.start_load(default)
            load_panel.wait_for_job(engine.job)  # the first page waits in place; the same background load
    job = engine.job()
    sidebar.render_gpu_problem(devices.cuda_problem)

    def list_served(address: str, key_env: str) -> list[str]:
        url = checked_server_url(address, settings.allowed_server_hosts())
        return engine.served_models(url, registry.checked_key_env(key_env, url) or "")

    choice = sidebar.render_model_picker(registry, engine.status(), engine.capabilities,
                                         busy=job is not None and job.running,
                                         list_served=list_served if settings.add_servers == "on" else None)
    if choice.added_server:
        add_row(state.SERVERS, choice.added_server,
                lambda: registry.with_server(*choice.added_server, allowed_hosts=settings.allowed_server_hosts()))
    if choice.added_folder:
        add_row(state.LOCAL_FOLDERS, choice.added_folder,
                lambda: registry.with_local_folder(choice.added_folder, settings.allowed_model_roots()))
    fit_warning = st.container()  # the plan's warning belongs under the Load button
    status_box = st.container()  # drawn after the actions below, shown above the options
    plan_fit = partial(fit_for, settings=settings, machine_gpus=[g.total_bytes for g in devices.gpus])
    can = engine.capabilities(choice.spec)
    plan_panel.render(choice.spec, plan_fit, gpu_sizes, fit_warning, weights_elsewhere=can.weights_elsewhere)
    options = None
    if can.load_options:  # otherwise whoever holds the weights placed them
        preview = partial(plan_placement, devices, settings, offload_folder=offload_folder(settings, choice.spec))
        options = load_panel.render_options(devices, preview)
    if choice.unload:
        controls.unload()
        st.rerun()
    elif choice.load and (options is not None or not can.load_options):
        controls.start_load(choice.spec, options)
        st.rerun()
    with status_box:
        load_panel.render_job_or_outcome(engine.job, controls.cancel_job)
        sidebar.render_status(engine.status())
    return registry


def account_keys(person: Person) -> api_panel.KeyActions | None:
    """What the API panel may do with the signed-in person's own keys (None: no accounts, one shared key)."""
    accounts = identity().accounts
    if accounts is None or person.name is None:
        return None
    name = person.name
    return api_panel.KeyActions(list_keys=lambda: accounts.keys(name),
                                create=lambda label: accounts.create_key(name, label),
                                revoke=lambda key_id: accounts.revoke_key(name, key_id))


def account_actions(person: Person) -> account_admin.AccountActions | None:
    """What an admin's page may do to accounts, each checked again where it is done (None: not an admin's page)."""
    accounts = identity().accounts
    if accounts is None or person.name is None or not person.may("manage_accounts"):
        return None

    def checked(action: Callable) -> Callable:
        def run(*args: object) -> object:
            person.require("manage_accounts")
            return action(*args)
        return run

    return account_admin.AccountActions(list_accounts=accounts.accounts, set_disabled=checked(accounts.set_disabled),
                                        set_role=checked(accounts.set_role))


def main() -> None:
    st.set_page_config(page_title="MoE Chat", page_icon="💬", layout="wide")
    settings = get_settings()
    session_id = get_script_run_ctx().session_id
    person = who_is_here(settings, session_id)
    if person is None:
        st.stop()  # nothing else is drawn, and no model is touched, before sign-in or the right password
    engine, devices = get_engine(), get_devices()
    try:
        registry = current_registry(settings)
    except MoEChatError as exc:  # a broken models.toml: say which file and what is wrong, not a traceback
        st.error(str(exc), icon=":material/error:")
        st.stop()
    has_gpu = devices.cuda_count > 0 and settings.device != "cpu"
    state.init(st.session_state, registry.default_id(has_gpu, settings.default_model))
    journal = Journal(get_store().for_owner(person.owner))
    journal.restore_from_url()
    journal.reload_if_changed()

    with st.sidebar:
        st.title("MoE Chat")
        account_panel.render_signed_in(person, identity().mode, lambda: sign_out(identity().accounts))
        registry = model_sidebar(engine, registry, settings, devices, person)
        st.divider()
        journal.apply(conversations.render(journal.store, journal.current()))
        st.divider()
        sidebar.render_memory_panel(snapshot, settings.memory_refresh_s, server=engine.status().info.server,
                                    gpus_unusable=devices.cuda_problem is not None)
        sidebar.render_downloads(settings.cache_dir, disk_room(settings.cache_dir).free_bytes, cache_dir_origin())
        api_panel.render(enabled=bool(settings.api_key) or identity().signs_in, model_id=engine.status().model_id,
                         keys=account_keys(person))
        if (actions := account_actions(person)) is not None:
            account_admin.render(person.name, actions)

    status = engine.status()
    loaded_spec = registry.get(status.model_id) if status.model_id in registry.ids else None
    system, params = "", None
    if status.state == "ready":
        with st.sidebar:
            system, params = generation_panel.render(
                engine, loaded_spec.system_prompt if loaded_spec else None, status.model_id, status.capabilities,
                settings.max_new_tokens, st.session_state[state.MESSAGES], turn.to_send)
    notices.render(registry, status, ModelControls(engine, person).start_load if person.may("manage_models") else None)
    ctx = turn.TurnContext(status=status, job=engine.job(), params=params, system=system, start_reply=engine.chat,
                           budget=engine.context_budget, owner=session_id,
                           client=person.line_client(gate.line_client(session_id)))
    turn.run(ctx, journal, settings)


if __name__ == "__main__":  # a run of the page script
    main()
else:  # `streamlit run app.py` found this module's `app`: the server, whose page is this same file
    from starlette.middleware import Middleware

    from web.admin_api import ROUTES as ADMIN_ROUTES
    from web.api import ROUTES
    from web.connections import PeerAddress, install_request_deadline
    from web.guard import UploadGuard
    from web.pass_cookie import ROUTES as PASS_ROUTES
    from web.signin import ROUTES as SIGN_IN_ROUTES
    from web.signin import SignInGuard
    from web.startup import lifespan

    _server = Settings.from_env()  # the two settings of the connections themselves: environment only
    install_request_deadline(_server.request_timeout_s)
    app = st.App(__file__, routes=[*ROUTES, *ADMIN_ROUTES, *SIGN_IN_ROUTES, *PASS_ROUTES], lifespan=lifespan,
                 middleware=[Middleware(PeerAddress, trusted=_server.trusted_proxy_networks()),
                             Middleware(SignInGuard), Middleware(UploadGuard)])
