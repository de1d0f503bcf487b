"""Offline checks of the Azure deployment in infra/ (no Bicep compiler, no Azure).

No Bicep compiler can be installed offline, so every template is parsed with
pycep-parser and the security settings that matter are asserted on the parsed
model: identity-based storage with shared keys off, an RBAC-only Key Vault, HTTPS and
TLS 1.2 everywhere, no public blob access, no secret in any app setting, role
assignments with deterministic names, and the Event Grid wiring of the blob trigger.
The postdeploy hook runs against a fake `az` to show it never handles the webhook key.
The alerts (an action group fed by ALERT_EMAIL, one log rule per rule of
shared/runs/alerts.py, the dead-letter metric rule) and the storage lifecycle rules
(what expires after how long, and that nothing matches the exports' snapshots) are
asserted the same way; what the log rules' queries select is tests/test_alert_rules.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from lark.exceptions import LarkError
from pycep import BicepParser

from functions.http_api.connections import CALLBACK_ROUTE
from functions.principal import TENANT_SETTING
from shared.errors import ConfigError
from shared.exports.access import ADMIN_ROLE
from shared.exports.state import STATE_PREFIX
from shared.runs import alerts, retention
from shared.runs.ids import check_run_id
from shared.runs.index import RUNS

CONTRIBUTOR_ROLE = "contributor"

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# The contract with the code: every one of these app settings must be set.
REQUIRED_APP_SETTINGS = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "CCEXPORT_STORAGE__blobServiceUri",
    "CCEXPORT_STORAGE__queueServiceUri",
    "CCEXPORT_STORAGE__credential",
    "CCEXPORT_STORAGE__clientId",
    "TASKHUB_NAME",
    "KEY_VAULT_URL",
    "AZURE_CLIENT_ID",
    "CTCT_CLIENT_ID",
    "CTCT_API_BASE",
    "CTCT_AUTH_BASE",
    "EXPORT_SCHEDULE",
    "INBOX_CONTAINER",
    "STAGING_CONTAINER",
    "REPORTS_CONTAINER",
    "EXPORTS_CONTAINER",
    "CCEXPORT_TENANT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_THREADPOOL_THREAD_COUNT",
    "DURABLE_HISTORY_DAYS",
}

# Key-based connections, and settings Flex Consumption rejects or ignores.
FORBIDDEN_APP_SETTINGS = {
    "AzureWebJobsStorage",
    "CCEXPORT_STORAGE",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCOUNTKEY|SAS\b|_KEY$", re.IGNORECASE)
SECRET_VALUE = re.compile(
    r"AccountKey=|SharedAccessKey|SharedAccessSignature|[?&]sig=|[?&]code=|@Microsoft\.KeyVault",
    re.IGNORECASE,
)

BUILT_IN_ROLES = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


# --- parsed-model helpers ------------------------------------------------------------


@functools.cache
def template(relative: str) -> dict[str, Any]:
    """The pycep model of one template (parsed once per test session)."""
    return cast(dict[str, Any], BicepParser().parse(file_path=INFRA / relative))


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's own configuration, unwrapped from `if (...)` and `for ...` forms."""
    config = cast(dict[str, Any], resource["config"])
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = cast(dict[str, Any], config["config"])
    return config


def declared(relative: str, resource_type: str) -> dict[str, dict[str, Any]]:
    """Resources of one type that a template creates (not `existing` references)."""
    resources = cast(dict[str, dict[str, Any]], template(relative).get("resources", {}))
    return {
        name: body(res)
        for name, res in resources.items()
        if res["type"] == resource_type and not res["existing"]
    }


def only(relative: str, resource_type: str) -> dict[str, Any]:
    found = declared(relative, resource_type)
    assert len(found) == 1, f"{relative}: expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))


def walk(node: Any) -> Iterator[Any]:
    """Every dict, list and scalar inside a parsed node."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def functions_called(node: Any) -> set[str]:
    """Names of the Bicep functions used anywhere inside a node (listKeys included)."""
    names: set[str] = set()
    for item in walk(node):
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            call = item["function"]
            if call.get("type") == "list_func":
                names.add(str(call["parameters"]["func_name"]))
            else:
                names.add(str(call.get("type")))
    return names


def parameter_default(relative: str, name: str) -> Any:
    return template(relative)["parameters"][name].get("default")


def decorator(relative: str, param: str, kind: str) -> Any:
    """A parameter's decorator argument (``min_value``, ``max_value``), or None."""
    decorators = template(relative)["parameters"][param]["decorators"]
    return next((d["argument"] for d in decorators if d["type"] == kind), None)


def dotted(node: Any) -> str:
    """A property path (``monitoring.outputs.applicationInsightsId``) as written."""
    if isinstance(node, str):
        return node
    operator = node["operator"]
    assert operator["type"] == "property_accessor", operator
    operands = operator["operands"]
    return f"{dotted(operands['operand_1'])}.{dotted(operands['operand_2'])}"


def app_settings() -> dict[str, Any]:
    site = only("app/functionapp.bicep", "Microsoft.Web/sites")
    entries = site["properties"]["siteConfig"]["appSettings"]
    settings = {str(entry["name"]): entry["value"] for entry in entries}
    assert len(settings) == len(entries), "an app setting is declared twice"
    return settings


# --- every file parses -----------------------------------------------------------------


def test_infra_has_the_expected_templates() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {
        "main.bicep",
        "eventgrid.bicep",
        "core/identity.bicep",
        "core/storage.bicep",
        "core/keyvault.bicep",
        "core/monitoring.bicep",
        "core/rbac.bicep",
        "core/alerts.bicep",
        "app/functionapp.bicep",
        "app/blob-events.bicep",
    } <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = template(path.relative_to(INFRA).as_posix())
    assert parsed.get("resources") or parsed.get("modules")


def test_parser_rejects_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text("resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n  kind: \n")
    with pytest.raises(LarkError):
        BicepParser().parse(file_path=broken)


def test_no_registry_modules() -> None:
    """Registry modules (br:, ts:) cannot be restored or checked offline."""
    for path in BICEP_FILES:
        modules = template(path.relative_to(INFRA).as_posix()).get("modules", {})
        for name, module in modules.items():
            assert module["type"] == "local", f"{path}: module {name} is {module['type']}"
            source = str(module["detail"]["path"])
            assert (path.parent / source).is_file(), f"{path}: module {name} -> {source}"


# --- storage ---------------------------------------------------------------------------


def test_storage_is_identity_only_https_tls12_and_private() -> None:
    account = only("core/storage.bicep", "Microsoft.Storage/storageAccounts")
    props = account["properties"]
    assert account["kind"] == "StorageV2"  # the Event Grid blob trigger needs GPv2
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowCrossTenantReplication"] is False


def test_containers_are_private_and_match_the_contract() -> None:
    containers = only(
        "core/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers"
    )
    assert containers["properties"]["publicAccess"] == "None"
    names = template("main.bicep")["variables"]["containers"]["value"]
    assert {"inbox", "staging", "reports", "exports"} <= set(names.values())
    assert names["inbox"] == "inbox"
    assert names["reports"] == "reports"


def test_blob_soft_delete_stays_off_for_customer_insights() -> None:
    blob = only("core/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices")
    assert blob["properties"]["deleteRetentionPolicy"]["enabled"] is False


# --- Key Vault -------------------------------------------------------------------------


def test_key_vault_is_rbac_only_with_soft_delete() -> None:
    props = only("core/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props
    assert props["enabledForTemplateDeployment"] is False


def test_purge_protection_is_a_parameter() -> None:
    props = only("core/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    conditional = props["enablePurgeProtection"]["operator"]
    assert conditional["type"] == "conditional"
    assert conditional["operands"]["condition"] == "enablePurgeProtection"
    assert conditional["operands"]["true_value"] is True
    module = template("main.bicep")["modules"]["keyVault"]["config"]["params"]
    assert module["enablePurgeProtection"] == "enableKeyVaultPurgeProtection"


# --- function app ----------------------------------------------------------------------


def test_plan_is_flex_consumption() -> None:
    plan = only("app/functionapp.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True  # Linux


def test_function_app_is_https_only_with_a_user_assigned_identity() -> None:
    site = only("app/functionapp.bicep", "Microsoft.Web/sites")
    props = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["scmMinTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"


def test_flex_runtime_is_python_311_and_deploys_with_the_identity() -> None:
    config = only("app/functionapp.bicep", "Microsoft.Web/sites")["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert parameter_default("main.bicep", "pythonVersion") == "3.11"
    assert parameter_default("app/functionapp.bicep", "pythonVersion") == "3.11"
    authentication = config["deployment"]["storage"]["authentication"]
    assert authentication["type"] == "UserAssignedIdentity"
    assert authentication["userAssignedIdentityResourceId"] == "identityId"
    assert "alwaysReady" not in config["scaleAndConcurrency"]  # idle cost stays at zero


def test_sign_in_is_required_except_the_oauth_callback_and_the_blob_webhook() -> None:
    """App Service authentication refuses a request without an Entra token for the
    app's registration with 401, before the app; only two paths are let through."""
    auth = only("app/functionapp.bicep", "Microsoft.Web/sites/config")
    assert auth["name"] == "authsettingsV2"
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    excluded = template("app/functionapp.bicep")["variables"]["authExcludedPaths"]["value"]
    assert validation["excludedPaths"] == "authExcludedPaths"
    assert sorted(excluded) == ["/api/oauth/callback", "/runtime/webhooks/blobs"]
    # the excluded callback is the app's own callback route, under the host's prefix
    prefix = json.loads((ROOT / "host.json").read_text()).get("extensions", {})
    route_prefix = prefix.get("http", {}).get("routePrefix", "api")
    assert f"/{route_prefix}/{CALLBACK_ROUTE}" in excluded
    entra = props["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    assert entra["registration"]["clientId"] == "authClientId"
    assert "tenant().tenantId" in entra["registration"]["openIdIssuer"]
    # the app trusts principals of the issuer's tenant only (functions/principal.py)
    tenant_id = {
        "type": "property_accessor",
        "operands": {"operand_1": {"function": {"type": "tenant"}}, "operand_2": "tenantId"},
    }
    assert app_settings()[TENANT_SETTING] == {"operator": tenant_id}
    assert "api://${authClientId}" in str(entra["validation"]["allowedAudiences"])
    assert props["login"]["tokenStore"]["enabled"] is False
    assert (
        template("main.bicep")["modules"]["functionApp"]["config"]["params"]["authClientId"]
        == "authClientId"
    )


def test_the_app_roles_are_admin_and_contributor_for_people_and_automation() -> None:
    roles = json.loads((INFRA / "auth" / "app-roles.json").read_text())
    assert sorted(r["value"] for r in roles) == [ADMIN_ROLE, CONTRIBUTOR_ROLE]
    for role in roles:
        assert role["isEnabled"] is True
        assert sorted(role["allowedMemberTypes"]) == ["Application", "User"]
    assert len({r["id"] for r in roles}) == len(roles)


def test_basic_publishing_credentials_are_off() -> None:
    policies = declared(
        "app/functionapp.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    )
    assert {p["name"]: p["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_app_settings_cover_the_contract() -> None:
    settings = app_settings()
    assert not REQUIRED_APP_SETTINGS - settings.keys()
    assert not FORBIDDEN_APP_SETTINGS & settings.keys()
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["INBOX_CONTAINER"] == "inboxContainerName"
    assert settings["EXPORT_SCHEDULE"] == "exportSchedule"
    assert "Authorization=AAD" in settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]


def test_every_storage_connection_uses_the_managed_identity() -> None:
    settings = app_settings()
    prefixes = {
        name.split("__")[0]
        for name in settings
        if name.endswith(("__blobServiceUri", "__queueServiceUri", "__tableServiceUri"))
    }
    assert prefixes == {"AzureWebJobsStorage", "CCEXPORT_STORAGE"}
    for prefix in prefixes:
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"


def test_no_app_setting_holds_a_secret() -> None:
    settings = app_settings()
    for name, value in settings.items():
        assert not SECRET_NAME.search(name), name
        for item in walk(value):
            if isinstance(item, str):
                assert not SECRET_VALUE.search(item), name
    # Nothing secret can even reach the settings: no secure parameter and no list*() call.
    for relative in ("app/functionapp.bicep", "main.bicep"):
        for name, param in template(relative)["parameters"].items():
            kinds = {d["type"] for d in param["decorators"]}
            assert "secure" not in kinds, f"{relative}: @secure() parameter {name}"
    site = only("app/functionapp.bicep", "Microsoft.Web/sites")
    assert not {f for f in functions_called(site) if f.startswith("list")}


def test_app_insights_uses_entra_auth() -> None:
    component = only("core/monitoring.bicep", "Microsoft.Insights/components")
    assert component["properties"]["DisableLocalAuth"] is True
    assert component["properties"]["WorkspaceResourceId"]


def test_worker_concurrency_matches_host_json() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    durable = host["extensions"]["durableTask"]
    threads = parameter_default("main.bicep", "pythonThreadCount")
    assert threads == parameter_default("app/functionapp.bicep", "pythonThreadCount")
    assert durable["maxConcurrentActivityFunctions"] == threads
    assert durable["maxConcurrentOrchestratorFunctions"] == threads
    assert durable["hubName"] == "%TASKHUB_NAME%"
    assert 1 <= host["extensions"]["blobs"]["maxDegreeOfParallelism"] <= threads


def test_defaults_match_the_app_contract() -> None:
    assert parameter_default("main.bicep", "constantContactApiBase") == "https://api.cc.email/v3"
    assert (
        parameter_default("main.bicep", "constantContactAuthBase")
        == "https://authz.constantcontact.com/oauth2/default/v1"
    )
    assert parameter_default("main.bicep", "exportSchedule") == "0 0 3 * * *"
    params = template("main.bicep")["modules"]["functionApp"]["config"]["params"]
    for name in ("exportSchedule", "constantContactClientId", "pythonThreadCount", "taskHubName"):
        assert params[name] == name


# --- alerts ----------------------------------------------------------------------------

SEVERITIES = {
    "runFailed": 1,
    "rejectsAboveShare": 2,
    "connectionNeedsReconnect": 1,
    "quotaExhausted": 2,
    "confirmationWaiting": 2,
    "functionErrors": 2,
}
"""Each log rule's severity (0 critical .. 4 verbose): what stops exports or loses
contacts is an error; what a person should look at soon is a warning."""

# The durations a log alert rule accepts (ISO 8601), its query's time range at most two days.
LOG_ALERT_DURATIONS = {"PT5M", "PT10M", "PT15M", "PT30M", "PT45M", "PT1H", "PT2H", "PT6H", "P1D"}
QUERY_RANGES = LOG_ALERT_DURATIONS | {"P2D"}


def log_rules() -> dict[str, dict[str, Any]]:
    rules = template("core/alerts.bicep")["variables"]["logRules"]["value"]
    found = {str(rule["key"]): rule for rule in rules}
    assert len(found) == len(rules), "a log rule is declared twice"
    return found


def test_alerts_are_wired_to_application_insights_and_the_system_topic() -> None:
    module = template("main.bicep")["modules"]["alerts"]["config"]
    params = module["params"]
    assert dotted(params["applicationInsightsId"]) == "monitoring.outputs.applicationInsightsId"
    assert dotted(params["systemTopicId"]) == "blobEvents.outputs.id"
    assert template("core/monitoring.bicep")["outputs"]["applicationInsightsId"]
    assert template("app/blob-events.bicep")["outputs"]["id"]
    for name in ("alertEmail", "rejectAlertPercent", "confirmationAlertHours"):
        assert params[name] == name
    by_export = params["rejectAlertPercentByExport"]["operator"]["operands"]
    assert by_export["true_value"] == {}  # empty: no override
    assert by_export["false_value"]["function"]["type"] == "json"


def test_the_action_group_emails_alert_email_when_one_is_given() -> None:
    group = only("core/alerts.bicep", "Microsoft.Insights/actionGroups")
    assert group["location"] == "Global"
    props = group["properties"]
    assert props["enabled"] is True
    assert 1 <= len(props["groupShortName"]) <= 12  # the platform's limit
    receivers = props["emailReceivers"]["operator"]
    assert receivers["type"] == "conditional"
    assert receivers["operands"]["condition"]["function"] == {
        "type": "empty",
        "parameters": {"item_to_test": "alertEmail"},
    }
    assert receivers["operands"]["true_value"] == []  # no address: rules without a receiver
    (receiver,) = receivers["operands"]["false_value"]
    assert receiver["emailAddress"] == "alertEmail"
    assert receiver["useCommonAlertSchema"] is True
    assert parameter_default("core/alerts.bicep", "alertEmail") == ""
    assert parameter_default("main.bicep", "alertEmail") == ""
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["alertEmail"]["value"] == "${ALERT_EMAIL=}"


def test_every_alert_rule_of_the_code_is_deployed_with_its_severity() -> None:
    rules = log_rules()
    assert set(rules) == {rule.key for rule in alerts.RULES} == set(SEVERITIES)
    for key, rule in rules.items():
        assert rule["severity"] == SEVERITIES[key], key
        assert rule["frequency"] in LOG_ALERT_DURATIONS, key
        assert rule["window"] in LOG_ALERT_DURATIONS, key
        assert rule["range"] in QUERY_RANGES, key
        assert isinstance(rule["autoMitigate"], bool), key
    waiting = rules["confirmationWaiting"]
    assert (waiting["range"], waiting["autoMitigate"]) == ("P2D", True)  # resolves on confirming
    assert rules["functionErrors"]["autoMitigate"] is True  # once per outage, not per failure
    for key in ("runFailed", "rejectsAboveShare", "connectionNeedsReconnect", "quotaExhausted"):
        assert rules[key]["autoMitigate"] is False, key  # each run that ends so is news
        assert rules[key]["frequency"] == rules[key]["window"] == rules[key]["range"], key


def test_each_log_rule_runs_its_generated_query_on_application_insights() -> None:
    variables = template("core/alerts.bicep")["variables"]
    load = variables["queries"]["value"]["function"]
    assert load["type"] == "load_json_content"
    assert (INFRA / "core" / load["parameters"]["file_path"]).is_file()
    loaded = json.loads((INFRA / "core" / "alert-queries.json").read_text())
    loop = template("core/alerts.bicep")["resources"]["logAlerts"]["config"]
    assert loop["loop_type"]["detail"] == {"item_name": "rule", "array_name": "logRules"}
    resource = loop["config"]
    props = resource["properties"]
    assert resource["kind"] == "LogAlert"
    assert props["scopes"] == ["applicationInsightsId"]
    assert props["enabled"] is True
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["query"] == "${kqlParameters}${queries[rule.key].query}"
    assert (criterion["timeAggregation"], criterion["operator"]) == ("Count", "GreaterThan")
    assert criterion["threshold"] == 0
    assert criterion["failingPeriods"] == {
        "numberOfEvaluationPeriods": 1,
        "minFailingPeriodsToAlert": 1,
    }
    assert [dotted(a) for a in props["actions"]["actionGroups"]] == ["actionGroup.id"]
    for key in log_rules():
        assert loaded[key]["query"] == alerts.kql(alerts.rule(key))
        assert [d["name"] for d in loaded[key]["dimensions"]] == list(alerts.rule(key).dimensions)
    # The template binds every name the queries use, and only those.
    preamble = variables["kqlParameters"]["value"]
    assert re.findall(r"let (\w+) = ", preamble) == list(alerts.PARAMETERS)
    assert "toreal(${rejectAlertPercent})" in preamble
    assert "dynamic(${string(rejectAlertPercentByExport)})" in preamble
    assert "${confirmationAlertHours}h;" in preamble


def test_the_alert_thresholds_are_parameters_with_sane_bounds() -> None:
    assert parameter_default("core/alerts.bicep", "rejectAlertPercent") == 5
    assert parameter_default("main.bicep", "rejectAlertPercent") == 5
    assert alerts.DEFAULT_PARAMETERS["RejectPercentDefault"] == 5
    assert decorator("core/alerts.bicep", "rejectAlertPercent", "max_value") == 100
    hours = parameter_default("core/alerts.bicep", "confirmationAlertHours")
    assert hours == parameter_default("main.bicep", "confirmationAlertHours") == 24
    assert alerts.DEFAULT_PARAMETERS["ConfirmationWait"].total_seconds() == hours * 3600
    # The waiting run's record must stay inside the rule's two-day look-back.
    assert decorator("core/alerts.bicep", "confirmationAlertHours", "max_value") <= 48 - 12
    assert decorator("main.bicep", "confirmationAlertHours", "max_value") <= 48 - 12
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["rejectAlertPercent"]["value"] == "${REJECT_ALERT_PERCENT=5}"
    assert params["rejectAlertPercentByExport"]["value"] == "${REJECT_ALERT_PERCENT_BY_EXPORT=}"
    assert params["confirmationAlertHours"]["value"] == "${CONFIRMATION_ALERT_HOURS=24}"


def test_dead_lettered_blob_events_alert() -> None:
    alert = only("core/alerts.bicep", "Microsoft.Insights/metricAlerts")
    props = alert["properties"]
    assert alert["location"] == "global"
    assert props["scopes"] == ["systemTopicId"]
    assert props["severity"] == 1
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    assert criterion["metricName"] == "DeadLetteredCount"
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    assert criterion["timeAggregation"] == "Total"
    assert [dotted(a["actionGroupId"]) for a in props["actions"]] == ["actionGroup.id"]
    # what it watches: the topic whose subscription dead-letters undeliverable events
    sub = only("eventgrid.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    assert sub["properties"]["deadLetterWithResourceIdentity"]


# --- retention ------------------------------------------------------------------------


def lifecycle_rules() -> dict[str, dict[str, Any]]:
    """Every lifecycle rule, its prefixes with the deployment's container names."""
    policy = only("core/storage.bicep", "Microsoft.Storage/storageAccounts/managementPolicies")
    rules = policy["properties"]["policy"]["rules"]["function"]
    assert rules["type"] == "concat"
    assert rules["parameters"] == {"arg_1": "otherRules", "arg_2": "reportRules"}
    variables = template("core/storage.bicep")["variables"]
    containers = template("main.bicep")["variables"]["containers"]["value"]
    storage = template("main.bicep")["modules"]["storage"]["config"]["params"]
    names = {
        f"${{{param}}}": containers[dotted(storage[param]).split(".")[1]]
        for param in storage
        if param.endswith("ContainerName")
    }

    def resolved(prefix: str) -> str:
        for placeholder, container in names.items():
            prefix = prefix.replace(placeholder, container)
        assert "${" not in prefix, prefix
        return prefix

    found: dict[str, dict[str, Any]] = {}
    for rule in variables["otherRules"]["value"]:
        found[rule["name"]] = {
            **rule,
            "prefixes": [resolved(p) for p in rule["definition"]["filters"]["prefixMatch"]],
        }
    loop = variables["reportRules"]["value"]
    assert loop["loop_type"]["detail"]["array_name"] == "reportPrefixes"
    body = loop["config"]
    assert body["definition"]["filters"]["prefixMatch"] == loop["loop_type"]["detail"]["item_name"]
    for i, group in enumerate(variables["reportPrefixes"]["value"]):
        name = body["name"].replace("${i}", str(i))
        found[name] = {**body, "name": name, "prefixes": [resolved(p) for p in group]}
    return found


def days(rule: dict[str, Any]) -> Any:
    return rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]


def expiry_of(blob: str) -> str | None:
    """The rule that deletes a blob (``container/name``), if any."""
    hits = [
        name
        for name, rule in lifecycle_rules().items()
        if any(blob.startswith(prefix) for prefix in rule["prefixes"])
    ]
    assert len(hits) <= 1, (blob, hits)
    return hits[0] if hits else None


def test_lifecycle_rules_expire_inbox_staging_reports_and_run_records() -> None:
    rules = lifecycle_rules()
    assert len(rules) <= 100  # the policy's limit
    for name, rule in rules.items():
        assert rule["enabled"] is True, name
        assert rule["type"] == "Lifecycle", name
        assert rule["definition"]["filters"]["blobTypes"] == ["blockBlob"], name
        assert 1 <= len(rule["prefixes"]) <= 10, name  # a rule's limit
        assert all("/" in p for p in rule["prefixes"]), name  # never a bare container name
    assert rules["expire-inbox"]["prefixes"] == ["inbox/"]
    assert days(rules["expire-inbox"]) == "inboxRetentionDays"
    assert rules["expire-staging"]["prefixes"] == ["staging/"]
    assert days(rules["expire-staging"]) == "stagingRetentionDays"
    assert rules["expire-run-records"]["prefixes"] == [f"exports/{RUNS}"]
    assert days(rules["expire-run-records"]) == "reportsRetentionDays"
    assert rules["expire-dead-letters"]["prefixes"] == ["eventgrid-deadletter/"]
    reports = [r for name, r in rules.items() if name.startswith("expire-reports-")]
    assert len(reports) == 4  # 36 first characters, ten a rule
    assert all(days(r) == "reportsRetentionDays" for r in reports)


def test_every_report_expires_and_no_snapshot_does() -> None:
    """Run ids start with a lower-case letter or a digit (shared/runs/ids.py); the
    snapshots live under _state/ in the same container and must outlive every run."""
    firsts = {c for c in map(chr, range(32, 127)) if _valid_run_id_start(c)}
    assert firsts == set("abcdefghijklmnopqrstuvwxyz0123456789")
    for first in firsts:
        for name in ("report.json", "rejects.csv"):
            assert (expiry_of(f"reports/{first}x.0123/{name}") or "").startswith("expire-reports-")
    assert not _valid_run_id_start(STATE_PREFIX[0])
    assert expiry_of(f"reports/{STATE_PREFIX}/high-value.0123abcd.bin") is None
    assert expiry_of("reports/_state/x.bin") is None
    # and nothing else that must stay: definitions, connections, locks, the app package
    for kept in (
        "exports/definitions/high-value.json",
        "exports/connections/crm.json",
        "exports/locks/token-crm",
        "app-package/released-package.zip",
    ):
        assert expiry_of(kept) is None, kept
    assert expiry_of("exports/runs/high-value/8239-abcd.json") == "expire-run-records"
    assert expiry_of("inbox/HighValue/HighValue/2026/11/28/0930/HighValue_1.csv") == "expire-inbox"
    assert expiry_of("inbox/HighValue/model.json") == "expire-inbox"
    assert expiry_of("staging/high-value.0123/chunks/chunk-00001.json") == "expire-staging"


def _valid_run_id_start(first: str) -> bool:
    try:
        check_run_id(first)
    except ConfigError:
        return False
    return True


def test_retention_ages_are_parameters_with_azd_values() -> None:
    defaults = {
        "inboxRetentionDays": ("INBOX_RETENTION_DAYS", 14),
        "stagingRetentionDays": ("STAGING_RETENTION_DAYS", 14),
        "reportsRetentionDays": ("REPORTS_RETENTION_DAYS", 90),
        "durableHistoryDays": ("DURABLE_HISTORY_DAYS", retention.DEFAULT_HISTORY_DAYS),
    }
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    storage = template("main.bicep")["modules"]["storage"]["config"]["params"]
    for name, (azd, default) in defaults.items():
        assert parameter_default("main.bicep", name) == default, name
        assert decorator("main.bicep", name, "min_value") == 1, name
        assert params[name]["value"] == f"${{{azd}={default}}}", name
        if name != "durableHistoryDays":
            assert storage[name] == name
            assert parameter_default("core/storage.bicep", name) == default, name


def test_durable_history_outlives_the_inbox() -> None:
    """A run is known as done by its Durable history; a folder still in the inbox whose
    history was purged would be started again by the schedule."""
    kept = template("main.bicep")["variables"]["durableHistoryKept"]["value"]["function"]
    assert kept["type"] == "max"
    assert kept["parameters"]["arg_1"] == "durableHistoryDays"
    floor = kept["parameters"]["arg_2"]["operator"]
    assert floor["type"] == "add"
    assert floor["operands"] == {"operand_1": "inboxRetentionDays", "operand_2": 2}
    params = template("main.bicep")["modules"]["functionApp"]["config"]["params"]
    assert params["durableHistoryDays"] == "durableHistoryKept"
    setting = app_settings()[retention.HISTORY_DAYS_SETTING]
    assert setting["function"] == {
        "type": "string",
        "parameters": {"value_to_convert": "durableHistoryDays"},
    }
    assert (
        parameter_default("main.bicep", "durableHistoryDays")
        >= parameter_default("main.bicep", "inboxRetentionDays") + 2
    )


# --- role assignments ------------------------------------------------------------------


def role_assignments() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in BICEP_FILES:
        relative = path.relative_to(INFRA).as_posix()
        for name, res in declared(relative, "Microsoft.Authorization/roleAssignments").items():
            yield relative, name, res


def test_role_assignments_have_deterministic_names() -> None:
    found = list(role_assignments())
    assert len(found) >= 6
    for relative, name, res in found:
        call = res["name"].get("function", {}) if isinstance(res["name"], dict) else {}
        assert call.get("type") == "guid", f"{relative}: {name} is not named with guid(...)"
        assert len(call["parameters"]) >= 3, f"{relative}: {name} guid needs scope+principal+role"
        assert res["properties"]["principalType"], f"{relative}: {name}"


def test_app_identity_gets_the_data_roles_it_needs() -> None:
    roles = template("core/rbac.bicep")["variables"]["roles"]["value"]
    for key, guid in roles.items():
        assert BUILT_IN_ROLES[key] == guid, key
    granted = set()
    for res in declared("core/rbac.bicep", "Microsoft.Authorization/roleAssignments").values():
        if res["properties"]["principalId"] == "appPrincipalId":
            role = res["properties"]["roleDefinitionId"]["function"]["parameters"]
            granted.add(role["resource_name_1"]["operator"]["operands"]["operand_2"])
    assert granted == {
        "storageBlobDataOwner",
        "storageQueueDataContributor",
        "storageTableDataContributor",
        "keyVaultSecretsOfficer",  # token rotation writes secrets
        "monitoringMetricsPublisher",
    }


# --- Event Grid ------------------------------------------------------------------------


def test_system_topic_watches_the_storage_account() -> None:
    topic = only("app/blob-events.bicep", "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    assert topic["identity"]["type"] == "SystemAssigned"


def test_subscription_feeds_the_blob_trigger_only_on_committed_inbox_blobs() -> None:
    sub = only("eventgrid.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    props = sub["properties"]
    assert props["destination"]["endpointType"] == "WebHook"
    assert props["destination"]["properties"]["maxEventsPerBatch"] == 1
    filt = props["filter"]
    assert filt["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert filt["subjectBeginsWith"] == "/blobServices/default/containers/${inboxContainerName}/"
    (api,) = filt["advancedFilters"]
    assert (api["operatorType"], api["key"]) == ("StringIn", "data.api")
    assert set(api["values"]) == {"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"}
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert parameter_default("eventgrid.bicep", "blobTriggerFunctionName") == "segment_blob_created"
    containers = template("main.bicep")["variables"]["containers"]["value"]
    assert parameter_default("eventgrid.bicep", "inboxContainerName") == containers["inbox"]
    assert (
        parameter_default("eventgrid.bicep", "deadLetterContainerName") == containers["deadLetter"]
    )


def test_webhook_url_uses_the_blobs_extension_key_and_is_never_output() -> None:
    url = template("eventgrid.bicep")["variables"]["webhookUrl"]["value"]
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${blobTriggerFunctionName}" in url
    assert "listKeys" in functions_called(template("eventgrid.bicep")["variables"])
    for relative in ("eventgrid.bicep", "main.bicep"):
        outputs = template(relative)["outputs"]
        text = json.dumps(outputs)
        assert "webhookUrl" not in text
        assert "blobsExtensionKey" not in text
        assert not {f for f in functions_called(outputs) if f.startswith("list")}, relative


# --- azd wiring ------------------------------------------------------------------------


def test_azure_yaml_deploys_the_repo_root_as_a_python_function_app() -> None:
    text = (ROOT / "azure.yaml").read_text()
    service = template("main.bicep")["modules"]["functionApp"]["config"]["params"]["azdServiceName"]
    assert re.search(rf"^services:\n  {service}:\n", text, re.MULTILINE)
    for line in ("project: .", "language: python", "host: function"):
        assert re.search(rf"^    {re.escape(line)}$", text, re.MULTILINE), line
    for script in re.findall(r"run: \./(\S+)", text):
        assert (ROOT / script).is_file(), script
    assert "postdeploy:" in text


def test_parameters_file_maps_onto_main_bicep() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared_params = template("main.bicep")["parameters"]
    assert params.keys() <= declared_params.keys()
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    required = {n for n, p in declared_params.items() if "default" not in p}
    assert required <= params.keys()


def test_deployment_leaves_infra_and_tool_venvs_out_of_the_package() -> None:
    ignored = set((ROOT / ".funcignore").read_text().split())
    assert {"infra", "tests", ".venv", ".venv-checkov", ".azure", "azure.yaml"} <= ignored
    assert "shared/workstation" in ignored  # never deployed; it needs development packages


def test_the_deployed_app_never_loads_the_workstation() -> None:
    """function_app imports nothing the deployment leaves out (.funcignore)."""
    probe = (
        "import sys, function_app; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('shared.workstation', 'croniter', 'durabletask', 'tqdm'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("script", ["postdeploy.sh", "postdeploy.ps1"])
def test_postdeploy_scripts_pass_every_required_template_parameter(script: str) -> None:
    text = (INFRA / "scripts" / script).read_text()
    passed = set(re.findall(r"\b([A-Za-z]+)=\S", text))
    required = {
        n for n, p in template("eventgrid.bicep")["parameters"].items() if "default" not in p
    }
    assert required <= passed
    assert "eventgrid.bicep" in text
    deploy = text[text.index("az deployment group create") :]
    assert "--output none" in deploy[: deploy.index("\n\n")]  # the result is not printed


# --- the postdeploy hook against a fake Azure CLI ---------------------------------------

FAKE_KEY = "fake-blobs-extension-key-0123456789"

FAKE_AZ = """#!/bin/sh
# Records each call; answers like the Azure CLI would for the calls the hook makes.
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "account show") exit 0 ;;
  "functionapp keys")
    case "$*" in
      *--query*)
        n=$(( $(cat "$FAKE_COUNT" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$FAKE_COUNT"
        if [ "$n" -ge "$KEY_READY_AT" ]; then echo true; else echo false; fi ;;
      *) echo '{"systemKeys": {"blobs_extension": "__KEY__"}}' ;;
    esac ;;
  "deployment group") exit 0 ;;
  "ad app") exit 0 ;;
  *) echo "fake az: unexpected call: $*" >&2; exit 2 ;;
esac
""".replace("__KEY__", FAKE_KEY)


def run_postdeploy(
    tmp_path: Path, key_ready_at: int, **env: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    curl = bin_dir / "curl"  # the warm-up request must not leave the machine
    curl.write_text('#!/bin/sh\nprintf \'curl %s\\n\' "$*" >> "$FAKE_LOG"\n')
    curl.chmod(curl.stat().st_mode | stat.S_IEXEC)
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_COUNT": str(tmp_path / "count"),
        "KEY_READY_AT": str(key_ready_at),
        "POSTDEPLOY_KEY_WAIT_SECONDS": "0",
        **env,
    }
    return subprocess.run(
        ["sh", str(INFRA / "scripts" / "postdeploy.sh")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


AZD_OUTPUTS = {
    "AZURE_RESOURCE_GROUP": "rg-test",
    "AZURE_FUNCTION_APP_NAME": "func-ccexport-abc",
    "AZURE_EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-ccexport-abc",
    "AZURE_STORAGE_ACCOUNT_NAME": "stccxabc",
    "AZURE_FUNCTION_APP_URL": "https://func-ccexport-abc.example.invalid",
}


def test_postdeploy_waits_for_the_key_then_deploys_the_subscription(tmp_path: Path) -> None:
    result = run_postdeploy(tmp_path, key_ready_at=3, **AZD_OUTPUTS)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    key_checks = [c for c in calls if c.startswith("functionapp keys list")]
    assert len(key_checks) == 3
    assert all("--query systemKeys.blobs_extension != null" in c for c in key_checks)
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert "--resource-group rg-test" in deploy
    assert deploy.endswith("--only-show-errors --output none")
    assert f"--template-file {INFRA / 'scripts' / '..' / 'eventgrid.bicep'}" in deploy
    for expected in (
        "functionAppName=func-ccexport-abc",
        "systemTopicName=evgt-ccexport-abc",
        "storageAccountName=stccxabc",
        "inboxContainerName=inbox",
        "deadLetterContainerName=eventgrid-deadletter",
    ):
        assert expected in deploy
    assert FAKE_KEY not in result.stdout + result.stderr
    assert "code=" not in result.stdout + result.stderr
    assert not any(c.startswith("ad app") for c in calls)  # no registration named: nothing


def test_postdeploy_registers_the_browser_sign_in_address(tmp_path: Path) -> None:
    """Browsers sign in through /.auth/login/aad, whose callback is on the app's own
    address: registered with the app registration once the address exists."""
    result = run_postdeploy(tmp_path, key_ready_at=1, AUTH_CLIENT_ID=FAKE_CLIENT_ID, **AZD_OUTPUTS)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    (update,) = [c for c in calls if c.startswith("ad app update")]
    url = AZD_OUTPUTS["AZURE_FUNCTION_APP_URL"]
    assert f"--id {FAKE_CLIENT_ID}" in update
    assert f"--web-redirect-uris {url}/.auth/login/aad/callback" in update
    assert "--enable-id-token-issuance true" in update
    # The console's address: sign in, then land on it (App Service authentication
    # answers 401 to a request without a session, so the sign-in link is the entry).
    console = f"{url}/.auth/login/aad?post_login_redirect_uri=/api/console/"
    assert f"the console: {console}" in result.stderr + result.stdout
    windows = (INFRA / "scripts" / "postdeploy.ps1").read_text()
    for needed in (
        "--web-redirect-uris",
        "/.auth/login/aad/callback",
        "--enable-id-token-issuance",
        "post_login_redirect_uri=/api/console/",
    ):
        assert needed in windows


def test_postdeploy_gives_up_when_the_host_never_publishes_the_key(tmp_path: Path) -> None:
    result = run_postdeploy(tmp_path, key_ready_at=99, POSTDEPLOY_KEY_ATTEMPTS="2", **AZD_OUTPUTS)
    assert result.returncode != 0
    assert "blobs_extension key after 2 attempts" in result.stderr
    calls = (tmp_path / "calls.log").read_text()
    assert "deployment group create" not in calls


def test_postdeploy_needs_the_azd_outputs(tmp_path: Path) -> None:
    outputs = {k: v for k, v in AZD_OUTPUTS.items() if k != "AZURE_EVENTGRID_SYSTEM_TOPIC_NAME"}
    result = run_postdeploy(tmp_path, key_ready_at=1, **outputs)
    assert result.returncode != 0
    assert "AZURE_EVENTGRID_SYSTEM_TOPIC_NAME is not set" in result.stderr
    assert not (tmp_path / "calls.log").exists()


# --- the preprovision hook against a fake Azure CLI and azd ---------------------------

FAKE_CLIENT_ID = "11111111-2222-3333-4444-555555555555"

FAKE_AZ_AD = """#!/bin/sh
# Records each call; answers like the Azure CLI would for the calls the hook makes.
printf 'az %s\\n' "$*" >> "$FAKE_LOG"
case "$1 $2 $3" in
  "account show "*) exit 0 ;;
  "ad app create")
    for arg in "$@"; do
      case "$arg" in @*) cp "${arg#@}" "$FAKE_ROLES" ;; esac
    done
    echo "__ID__" ;;
  "ad app update"|"ad sp create") exit 0 ;;
  *) echo "fake az: unexpected call: $*" >&2; exit 2 ;;
esac
""".replace("__ID__", FAKE_CLIENT_ID)

FAKE_AZD = """#!/bin/sh
printf 'azd %s\\n' "$*" >> "$FAKE_LOG"
"""


def run_preprovision(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("az", FAKE_AZ_AD), ("azd", FAKE_AZD)):
        tool = bin_dir / name
        tool.write_text(text)
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_ROLES": str(tmp_path / "roles.json"),
        "AZURE_ENV_NAME": "prod",
        **env,
    }
    return subprocess.run(
        ["sh", str(INFRA / "scripts" / "preprovision.sh")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_preprovision_registers_the_app_with_its_roles_once(tmp_path: Path) -> None:
    done = run_preprovision(tmp_path)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    create = next(c for c in calls if c.startswith("az ad app create"))
    assert "--display-name ccexport-prod" in create
    assert "--sign-in-audience AzureADMyOrg" in create
    roles = json.loads((tmp_path / "roles.json").read_text())
    assert sorted(r["value"] for r in roles) == [ADMIN_ROLE, CONTRIBUTOR_ROLE]
    assert f"az ad app update --id {FAKE_CLIENT_ID} --identifier-uris api://{FAKE_CLIENT_ID}" in (
        " ".join(calls)
    )
    assert any(c.startswith(f"az ad sp create --id {FAKE_CLIENT_ID}") for c in calls)
    updates = [c for c in calls if c.startswith("az ad app update")]
    assert [u.split("api=@")[-1].split()[0].rsplit("/", 1)[-1] for u in updates[1:]] == [
        "api-scope.json",
        "api-preauthorized.json",
    ]
    assert f"azd env set AUTH_CLIENT_ID {FAKE_CLIENT_ID}" in calls


def test_the_api_scope_is_the_one_the_azure_cli_is_pre_authorised_for() -> None:
    scope = json.loads((INFRA / "auth" / "api-scope.json").read_text())
    both = json.loads((INFRA / "auth" / "api-preauthorized.json").read_text())
    assert both["oauth2PermissionScopes"] == scope["oauth2PermissionScopes"]
    (only_scope,) = scope["oauth2PermissionScopes"]
    assert only_scope["value"] == "user_impersonation"
    (client,) = both["preAuthorizedApplications"]
    assert client["delegatedPermissionIds"] == [only_scope["id"]]
    assert scope["requestedAccessTokenVersion"] == both["requestedAccessTokenVersion"] == 2


def test_preprovision_keeps_a_registration_it_is_given(tmp_path: Path) -> None:
    done = run_preprovision(tmp_path, AUTH_CLIENT_ID=FAKE_CLIENT_ID)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c for c in calls if "ad app" in c or "azd" in c] == []


def test_preprovision_scripts_agree() -> None:
    """The Windows twin makes the same calls with the same arguments."""
    posix = (INFRA / "scripts" / "preprovision.sh").read_text()
    windows = (INFRA / "scripts" / "preprovision.ps1").read_text()
    for text in (posix, windows):
        for needed in (
            "az ad app create",
            "--sign-in-audience AzureADMyOrg",
            "--requested-access-token-version 2",
            "app-roles.json",
            "--identifier-uris",
            "az ad sp create",
            "api-scope.json",
            "api-preauthorized.json",
            "azd env set AUTH_CLIENT_ID",
        ):
            assert needed in text, needed
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert "run: ./infra/scripts/preprovision.sh" in azure_yaml
    assert "run: ./infra/scripts/preprovision.ps1" in azure_yaml


def test_the_records_the_alerts_read_are_never_sampled_out() -> None:
    """The alert rules read trace records (a run's `run finished`, a connection to
    reconnect) and requests; sampling must keep every one. The host's Application
    Insights sampling is off for them here, should the app go back to that mode;
    in OpenTelemetry mode the distro's sampler applies to spans only, and the
    test below keeps every one."""
    host = json.loads((ROOT / "host.json").read_text())
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    kept = set(str(sampling.get("excludedTypes", "")).split(";"))
    assert {"Request", "Trace"} <= kept or sampling.get("isEnabled") is False


def test_telemetry_goes_out_through_opentelemetry_with_only_the_azure_sdk_instrumented() -> None:
    """The worker configures the Azure Monitor distro (shared/telemetry/ uses only the
    OpenTelemetry API), the host links a run's trigger, orchestration and activities into
    one trace, and the distro instruments no client library but the Azure SDK: every
    other it knows would record URLs of requests ccexport does not make, or, for one it
    later makes, URLs that may hold a query. A distro that learns a new library fails
    here until the setting names it."""
    from azure.monitor.opentelemetry._constants import (  # noqa: PLC0415 - the installed distro
        _AZURE_SDK_INSTRUMENTATION_NAME,
        _FULLY_SUPPORTED_INSTRUMENTED_LIBRARIES,
    )

    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    tracing = host["extensions"]["durableTask"]["tracing"]
    assert tracing == {"distributedTracingEnabled": True, "version": "V2"}
    settings = app_settings()
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    disabled = set(settings["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(","))
    assert disabled == set(_FULLY_SUPPORTED_INSTRUMENTED_LIBRARIES) - {
        _AZURE_SDK_INSTRUMENTATION_NAME
    }
    assert settings["OTEL_TRACES_SAMPLER"] == "always_on", "a run's trace is kept whole"
    assert "azure-monitor-opentelemetry==" in (ROOT / "requirements.txt").read_text()
