"""Structure of infra/: every template parses, and the security properties the issue asks for hold.

The trees come from pycep-parser (the Bicep parser checkov uses), so these checks read the same
syntax a deployment would, not grep patterns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_tree import accessor, deployed, function_call, module_params, resources
from tests.infra.conftest import BICEP_FILES, INFRA, KQL_FILES, REPO, rel

MAIN = "infra/main.bicep"
RBAC = "infra/app/rbac.bicep"
FUNCTION = "infra/app/function-app.bicep"
TENANT = "infra/tenant/audit-reader-role.bicep"
ALERTS = "infra/app/alerts.bicep"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
README = REPO / "README.md"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"

# The app settings the audit code reads (its contract), and the ones that must never be deployed.
CONFIG = REPO / "shared" / "core" / "config.py"
LOCAL_ONLY_SETTINGS_ = {"AUDIT_TABLE_CONNECTION_STRING"}
CONTRACT_SETTINGS = set(re.findall(r"\"(AUDIT_[A-Z_]+)\"", CONFIG.read_text())) - LOCAL_ONLY_SETTINGS_
#: The regions that offer Flex Consumption, as the Azure-Samples Flex Consumption azd templates list them
#: (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep), less the canary eastus2euap.
FLEX_REGIONS = {
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia", "centralus",
    "eastasia", "eastus", "eastus2", "francecentral", "germanywestcentral", "italynorth", "japaneast",
    "koreacentral", "northcentralus", "northeurope", "norwayeast", "southafricanorth", "southcentralus",
    "southeastasia", "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth", "ukwest",
    "westcentralus", "westeurope", "westus", "westus2", "westus3",
}  # fmt: skip
LOCAL_ONLY_SETTINGS = LOCAL_ONLY_SETTINGS_

ROLE_IDS = {
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


def _bicep_text() -> str:
    """All Bicep source without // comments (comments may name what the code must not do)."""
    code = "\n".join(p.read_text() for p in BICEP_FILES)
    return re.sub(r"(^|\s)//.*$", r"\1", code, flags=re.M)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [rel(p) for p in BICEP_FILES])
def test_every_bicep_file_parses_with_pycep(bicep_trees: dict[str, Any], path: str) -> None:
    tree = bicep_trees[path]
    assert "__error__" not in tree, f"{path} does not parse with pycep-parser: {tree.get('__error__')}"


def test_layout_is_complete() -> None:
    for required in (
        "main.bicep",
        "main.parameters.json",
        "abbreviations.json",
        "app/function-app.bicep",
        "app/alerts.bicep",
        "app/rbac.bicep",
        "core/storage/storage-account.bicep",
        "core/monitor/monitoring.bicep",
        "tenant/audit-reader-role.bicep",
        "tenant/audit-reader-role.json",
        "app/workbook.bicep",
        "app/workbook.json",
    ):
        assert (INFRA / required).is_file(), f"infra/{required} is missing"
    assert KQL_FILES, "infra/queries/*.kql (the example queries of the docs) are missing"
    assert (REPO / "azure.yaml").is_file(), "azure.yaml (for `azd up`) is missing"


def test_every_module_path_exists(bicep_trees: dict[str, Any]) -> None:
    for file, tree in bicep_trees.items():
        for symbol, module in (tree.get("modules") or {}).items():
            target = (REPO / file).parent / module["detail"]["path"]
            assert target.is_file(), f"{file}: module {symbol} points at missing {module['detail']['path']}"


# -- parameters and outputs -----------------------------------------------------------------


def test_every_parameter_has_a_description(bicep_trees: dict[str, Any]) -> None:
    missing = []
    for file, tree in bicep_trees.items():
        for name, param in (tree.get("parameters") or {}).items():
            descriptions = [d for d in param.get("decorators", []) if d.get("type") == "description"]
            if not descriptions or not str(descriptions[0].get("argument", "")).strip():
                missing.append(f"{file}: {name}")
    assert not missing, "parameters without @description: " + ", ".join(missing)


def test_main_is_azd_compatible(bicep_trees: dict[str, Any]) -> None:
    main = bicep_trees[MAIN]
    assert main["globals"]["scope"]["value"] == "subscription"
    params = main["parameters"]
    assert {"environmentName", "location", "securityPrincipalId", "securityPrincipalType"} <= set(params)
    assert "principalId" not in params, "the deployer (azd's AZURE_PRINCIPAL_ID) gets no data access"
    location_meta = [d for d in params["location"]["decorators"] if d.get("type") == "metadata"]
    assert location_meta, "location needs @metadata({azd: {type: 'location'}}) for azd"
    (allowed,) = [d["argument"] for d in params["location"]["decorators"] if d.get("type") == "allowed"]
    assert set(allowed) == FLEX_REGIONS and len(allowed) == len(FLEX_REGIONS), "location: the Flex Consumption regions"
    kind = [d["argument"] for d in params["securityPrincipalType"]["decorators"] if d.get("type") == "allowed"]
    assert kind == [["User", "Group", "ServicePrincipal"]] and params["securityPrincipalType"]["default"] == "Group"
    assert deployed(bicep_trees, "Microsoft.Resources/resourceGroups"), "main.bicep must create the resource group"
    token = main["variables"]["resourceToken"]["value"]
    assert function_call(token) is not None and function_call(token)[0] == "to_lower"  # type: ignore[index]
    outputs = main["outputs"]
    assert outputs, "main.bicep has no outputs"
    for name in outputs:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"output {name} is not UPPER_SNAKE (azd env values)"
    assert {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_PRINCIPAL_ID"} <= set(
        outputs
    )


def _azd_mapping() -> dict[str, tuple[str, str | None]]:
    """main.parameters.json: ``{parameter: (azd setting, default or None)}`` of each ``${NAME=default}``."""
    data = json.loads((INFRA / "main.parameters.json").read_text())
    mapping = {}
    for name, entry in data["parameters"].items():
        match = re.fullmatch(r"\$\{([A-Z][A-Z0-9_]*)(?:=(.*))?\}", entry["value"])
        assert match, f"main.parameters.json: {name} is not one ${{AZD_SETTING[=default]}}: {entry['value']!r}"
        mapping[name] = (match[1], match[2])
    return mapping


def _bicep_literal(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def mapping_problems(declared: dict[str, Any], mapping: dict[str, tuple[str, str | None]]) -> list[str]:
    """How main.parameters.json fails to make every parameter reachable from azd with the template's default."""
    problems = [f"azd cannot set {name}" for name in sorted(set(declared) - set(mapping))]
    problems += [f"unknown parameter {name}" for name in sorted(set(mapping) - set(declared))]
    settings = [setting for setting, _ in mapping.values()]
    problems += [f"{s} is used twice" for s in sorted({s for s in settings if settings.count(s) > 1})]
    for name, (setting, default) in sorted(mapping.items()):
        if name not in declared:
            continue
        if not setting.startswith(("AUDIT_", "AZURE_")):
            problems.append(f"{name}: {setting} is neither AUDIT_* nor azd's AZURE_*")
        has_default = declared[name].get("default") is not None
        if default is not None and (not has_default or default != _bicep_literal(declared[name]["default"])):
            problems.append(f"{name}: {setting} defaults to {default!r}, main.bicep to {declared[name].get('default')!r}")
        if default is None and has_default and declared[name]["default"] != "":
            problems.append(f"{name}: an unset {setting} must give the template's default")
    return problems


def test_every_parameter_is_reachable_from_azd_with_the_template_default(bicep_trees: dict[str, Any]) -> None:
    declared = bicep_trees[MAIN]["parameters"]
    mapping = _azd_mapping()
    assert mapping_problems(declared, mapping) == []
    # The deploy guide's settings table is this mapping, row for row.
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| `(\w+)`", DEPLOY_DOC.read_text(), re.M))
    assert rows == {setting: name for name, (setting, _) in mapping.items()}, "docs/deploy.md's settings table"


def test_the_parameter_mapping_check_catches_drift(bicep_trees: dict[str, Any]) -> None:
    declared = bicep_trees[MAIN]["parameters"]
    mapping = _azd_mapping()
    unreachable = {k: v for k, v in mapping.items() if k != "auditLeaseSeconds"}
    assert mapping_problems(declared, unreachable) == ["azd cannot set auditLeaseSeconds"]
    drifted = {**mapping, "auditLeaseSeconds": ("AUDIT_LEASE_SECONDS", "300")}
    assert mapping_problems(declared, drifted) == ["auditLeaseSeconds: AUDIT_LEASE_SECONDS defaults to '300', main.bicep to 600"]
    shared = {**mapping, "auditRetryTotal": ("AUDIT_LEASE_SECONDS", "4")}
    assert "AUDIT_LEASE_SECONDS is used twice" in mapping_problems(declared, shared)
    unset = {**mapping, "auditOwnerTags": ("AUDIT_OWNER_TAGS", None)}
    assert mapping_problems(declared, unset) == ["auditOwnerTags: an unset AUDIT_OWNER_TAGS must give the template's default"]


def test_azure_yaml_deploys_the_function_service(bicep_trees: dict[str, Any]) -> None:
    text = (REPO / "azure.yaml").read_text()
    assert re.search(r"^services:\s*\n\s+audit:\s*\n(\s+.*\n)*?\s+host:\s*function\s*$", text, re.M), text
    assert re.search(r"^\s+language:\s*python\s*$", text, re.M)
    site = deployed(bicep_trees, "Microsoft.Web/sites")[0]
    tags = site.body["tags"]
    assert "'azd-service-name'" in json.dumps(tags), "the site needs the azd-service-name tag for `azd deploy`"
    assert module_params(bicep_trees, MAIN, "functionApp")["serviceName"] == "audit"


# -- resources ---------------------------------------------------------------------------------


def test_required_resource_types_exist(bicep_trees: dict[str, Any]) -> None:
    types = {r.type.lower() for r in resources(bicep_trees) if not r.existing}
    for required in (
        "Microsoft.Resources/resourceGroups",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Storage/storageAccounts/tableServices/tables",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.Insights/actionGroups",
        "Microsoft.Insights/scheduledQueryRules",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Authorization/roleDefinitions",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Insights/workbooks",
    ):
        assert required.lower() in types, f"no {required} is deployed"
    assert len(deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules")) == 4


def test_storage_forbids_shared_keys_and_anonymous_access(bicep_trees: dict[str, Any]) -> None:
    accounts = deployed(bicep_trees, "Microsoft.Storage/storageAccounts")
    assert accounts
    for account in accounts:
        p = account.properties
        assert p.get("allowSharedKeyAccess") is False, f"{account.file}: shared keys must be disabled"
        assert p.get("defaultToOAuthAuthentication") is True
        assert p.get("allowBlobPublicAccess") is False
        assert p.get("minimumTlsVersion") == "TLS1_2"
        assert p.get("supportsHttpsTrafficOnly") is True
        assert p.get("isLocalUserEnabled") is False
        assert p.get("allowCrossTenantReplication") is False
    for container in deployed(bicep_trees, "Microsoft.Storage/storageAccounts/blobServices/containers"):
        assert container.properties.get("publicAccess") == "None"
    # Both accounts come from the one module; main uses it for host and results storage.
    modules = bicep_trees[MAIN]["modules"]
    storage_modules = [m for m in modules.values() if m["detail"]["path"] == "core/storage/storage-account.bicep"]
    assert len(storage_modules) == 2


def test_no_keys_or_connection_strings_anywhere() -> None:
    text = _bicep_text()
    for forbidden in ("listKeys(", "listkeys(", "AccountKey=", "SharedAccessSignature", "InstrumentationKey="):
        assert forbidden not in text, f"infra/ uses {forbidden!r}: the deployment must be key-less"
    for setting in LOCAL_ONLY_SETTINGS:
        assert setting not in text, f"{setting} is for local development only and must not be deployed"
    assert re.search(r"\bAzureWebJobsStorage\s*:", text) is None, "AzureWebJobsStorage must be identity-based (__*)"


def test_all_four_tables_are_created(bicep_trees: dict[str, Any]) -> None:
    results = module_params(bicep_trees, MAIN, "resultsStorage")
    names = [accessor(n) for n in results["tableNames"]]
    table_vars = bicep_trees[MAIN]["variables"]["tableNames"]["value"]
    created = {table_vars[n.split(".", 1)[1]] for n in names if n}
    assert created == {"ClientCertAudit", "ClientCertAuditLatest", "ClientCertAuditRuns", "ClientCertAuditExemptions"}


def test_function_app_is_flex_and_locked_down(bicep_trees: dict[str, Any]) -> None:
    plan = deployed(bicep_trees, "Microsoft.Web/serverfarms")[0].body
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    site = deployed(bicep_trees, "Microsoft.Web/sites")[0]
    body, p = site.body, site.properties
    assert body["kind"] == "functionapp,linux"
    assert body["identity"]["type"] == "identityType"
    param = bicep_trees[FUNCTION]["parameters"]["identityType"]
    assert param["default"] == "UserAssigned"
    assert p["httpsOnly"] is True
    assert p["siteConfig"]["minTlsVersion"] == "1.2"
    assert p["siteConfig"]["ftpsState"] == "Disabled"
    runtime = p["functionAppConfig"]["runtime"]
    assert runtime["name"] == "python"
    allowed = next(
        d for d in bicep_trees[FUNCTION]["parameters"]["pythonVersion"]["decorators"] if d["type"] == "allowed"
    )
    assert set(allowed["argument"]) <= {"3.11", "3.12"}
    auth = p["functionAppConfig"]["deployment"]["storage"]["authentication"]["operator"]["operands"]
    assert auth["false_value"] == {"type": "SystemAssignedIdentity"}
    assert auth["true_value"]["type"] == "UserAssignedIdentity"
    for policy in deployed(bicep_trees, "Microsoft.Web/sites/basicPublishingCredentialsPolicies"):
        assert policy.properties == {"allow": False}, "basic-auth publishing must be off"


def test_site_requires_client_certificates(bicep_trees: dict[str, Any]) -> None:
    # The app serves no HTTP; it must pass its own audit (ClientCertMode Required).
    sites = deployed(bicep_trees, "Microsoft.Web/sites")
    assert len(sites) == 1
    p = sites[0].properties
    # A parameter (Flex Consumption documents some certificate features as unsupported), whose
    # default is what the audit calls PASS, in the module and in main.bicep.
    assert p["clientCertEnabled"] == "clientCertEnabled" and p["clientCertMode"] == "clientCertMode"
    params = bicep_trees[FUNCTION]["parameters"]
    assert params["clientCertEnabled"]["default"] is True
    assert params["clientCertMode"]["default"] == "Required"
    main = bicep_trees[MAIN]["parameters"]
    assert main["appClientCertEnabled"]["default"] is True and main["appClientCertMode"]["default"] == "Required"
    passed = module_params(bicep_trees, MAIN, "functionApp")
    assert passed["clientCertEnabled"] == "appClientCertEnabled" and passed["clientCertMode"] == "appClientCertMode"
    assert "clientCertExclusionPaths" not in p, "no path may be excluded from the client certificate requirement"


def test_user_assigned_identity_is_the_default_and_its_roles_precede_the_app(bicep_trees: dict[str, Any]) -> None:
    params = bicep_trees[MAIN]["parameters"]
    assert params["useUserAssignedIdentity"]["default"] is True
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["useUserAssignedIdentity"]["value"] == "${AUDIT_USE_USER_ASSIGNED_IDENTITY=true}"
    modules = bicep_trees[MAIN]["modules"]
    # Two exclusive instances of rbac.bicep: before the app (user-assigned), after it (system).
    user = modules["rbacUserAssigned"]["config"]
    system = modules["rbacSystemAssigned"]["config"]
    assert user["condition"] == "useUserAssignedIdentity"
    assert system["condition"]["operator"] == {"type": "not", "operands": {"bool_value": "useUserAssignedIdentity"}}
    assert accessor(user["config"]["params"]["functionPrincipalId"]) == "identity.outputs.principalId"
    assert (
        accessor(system["config"]["params"]["functionPrincipalId"]) == "functionApp.outputs.systemAssignedPrincipalId"
    )
    app = modules["functionApp"]["config"]
    assert app["dependsOn"] == ["rbacUserAssigned"], "the app must wait for the identity's role assignments"
    assert set(user["config"]["params"]) == set(system["config"]["params"])


def _int_ranges() -> dict[str, tuple[int, int, int]]:
    """``{setting: (default, min, max)}`` of every ``_int(env, "AUDIT_X", default, lo, hi)`` in shared/core/config.py."""
    from shared.core.config import DEFAULTS

    ranges = {}
    for setting, default, lo, hi in re.findall(
        r"_int\(env, \"(AUDIT_[A-Z_]+)\", ([\w.]+), (\w+), (\w+)\)", CONFIG.read_text()
    ):
        value = getattr(DEFAULTS, default.split(".", 1)[1]) if default.startswith("d.") else int(default)
        bound = {"LEASE_FLOOR_SECONDS": 60}
        ranges[setting] = (int(value), int(bound.get(lo, lo)), int(bound.get(hi, hi)))
    return ranges


def test_every_numeric_setting_has_the_code_default_and_a_range_the_code_accepts(bicep_trees: dict[str, Any]) -> None:
    settings = module_params(bicep_trees, MAIN, "functionApp")["appSettings"]
    params = bicep_trees[MAIN]["parameters"]
    ranges = _int_ranges()
    assert len(ranges) >= 7
    for setting, (default, lo, hi) in ranges.items():
        call = function_call(settings[setting])
        assert call and call[0] == "string", f"{setting} must be string(<int parameter>)"
        param = params[call[1][0]]
        decorators = {d["type"]: d.get("argument") for d in param["decorators"]}
        assert param["default"] == default, f"{setting}: Bicep default {param['default']} != the code's {default}"
        assert lo <= decorators["min_value"] <= decorators["max_value"] <= hi, f"{setting}: a value the code refuses"


def test_app_settings_cover_the_contract(bicep_trees: dict[str, Any]) -> None:
    settings = module_params(bicep_trees, MAIN, "functionApp")["appSettings"]
    assert set(settings) == CONTRACT_SETTINGS, f"settings the code reads that no parameter sets: {sorted(CONTRACT_SETTINGS - set(settings))}"
    assert len(CONTRACT_SETTINGS) >= 19
    # Every AUDIT_* name the template sets is one the code reads (no typo goes unnoticed).
    code = (REPO / "shared" / "core" / "config.py").read_text()
    read_by_code = set(re.findall(r"\"(AUDIT_[A-Z_]+)\"", code))
    assert set(settings) <= read_by_code, f"settings the code never reads: {sorted(set(settings) - read_by_code)}"
    params = bicep_trees[MAIN]["parameters"]
    assert settings["AUDIT_SCHEDULE"] == "auditSchedule"
    assert params["auditSchedule"]["default"] == "0 0 2 * * *"
    assert settings["AUDIT_CHANGES_SCHEDULE"] == "auditChangesSchedule"
    assert params["auditChangesSchedule"]["default"] == "0 */10 * * * *"
    assert params["auditInventorySource"]["default"] == "arm"
    assert params["auditRetentionDays"]["default"] == 400
    assert params["auditConcurrency"]["default"] == 8
    assert params["auditSubscriptions"]["default"] == ""
    assert settings["AUDIT_ARM_ENDPOINT"] == "armEndpoint"
    assert "environment().resourceManager" in (INFRA / "main.bicep").read_text()
    assert settings["AUDIT_TABLE_SERVICE_URI"] == "auditTableServiceUri"
    # The site's appSettings are exactly union(appSettings, hostSettings, userAssignedSettings).
    site = deployed(bicep_trees, "Microsoft.Web/sites")[0]
    loop = site.properties["siteConfig"]["appSettings"]
    assert loop["loop_type"]["detail"]["object_name"] == "allSettings"
    union = function_call(bicep_trees[FUNCTION]["variables"]["allSettings"]["value"])
    assert union == ("union", ["appSettings", "hostSettings", "userAssignedSettings"])
    host = bicep_trees[FUNCTION]["variables"]["hostSettings"]["value"]
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "AzureWebJobsStorage__blobServiceUri" in host
    assert (
        host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]["operator"]["operands"]["false_value"] == "Authorization=AAD"
    )
    user_assigned = bicep_trees[FUNCTION]["variables"]["userAssignedSettings"]["value"]["operator"]["operands"]
    assert set(user_assigned["true_value"]) == {"AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId"}
    assert user_assigned["false_value"] == {}, "AZURE_CLIENT_ID only with a user-assigned identity"


def test_monitoring_is_workspace_based_without_local_auth(bicep_trees: dict[str, Any]) -> None:
    component = deployed(bicep_trees, "Microsoft.Insights/components")[0].properties
    assert component["DisableLocalAuth"] is True
    assert accessor(component["WorkspaceResourceId"]) == "logAnalytics.id"
    workspace = deployed(bicep_trees, "Microsoft.OperationalInsights/workspaces")[0].properties
    assert workspace["features"]["disableLocalAuth"] is True


# -- role assignments --------------------------------------------------------------------------


def test_role_assignments_are_named_scope_principal_role(bicep_trees: dict[str, Any]) -> None:
    assignments = deployed(bicep_trees, "Microsoft.Authorization/roleAssignments")
    assert len(assignments) >= 4
    for a in assignments:
        call = function_call(a.body["name"])
        assert call and call[0] == "guid" and len(call[1]) == 3, (
            f"{a.file}:{a.symbol} name is not guid(scope, principal, role)"
        )
        scope_arg, principal_arg, role_arg = (accessor(x) for x in call[1])
        scope = a.body.get("scope")
        expected_scope = f"{scope}.id" if scope else "management_group().id"
        assert scope_arg == expected_scope, f"{a.symbol}: first guid() argument is {scope_arg}, not the scope's id"
        principal = accessor(a.properties["principalId"])
        if principal and principal.endswith(".identity.principalId"):
            # A resource's own identity: its principal id exists only after deployment, and an
            # assignment name must be known at compile time, so the resource's id stands for it.
            owner = principal.removesuffix(".identity.principalId")
            assert principal_arg == f"{owner}.id", f"{a.symbol}: second guid() argument must be {owner}.id"
        else:
            assert principal_arg == principal, f"{a.symbol}: second guid() argument"
        assert role_arg == accessor(a.properties["roleDefinitionId"]), f"{a.symbol}: third guid() argument"


def test_the_identity_gets_exactly_the_data_roles_it_needs(bicep_trees: dict[str, Any]) -> None:
    rbac = bicep_trees["infra/app/rbac.bicep"]
    role_ids = rbac["variables"]["roles"]["value"]
    for name, role_id in ROLE_IDS.items():
        assert role_id in role_ids.values(), f"{name} is not assigned"
    by_symbol = {a.symbol: a for a in deployed(bicep_trees, "Microsoft.Authorization/roleAssignments")}
    assert by_symbol["hostBlobOwner"].body["scope"] == "hostStorage"
    assert by_symbol["telemetryPublisher"].body["scope"] == "applicationInsights"
    # Least privilege on the results account: each table its own assignment; write on the three the
    # app writes, read only on the exemptions table (whoever deploys code to the app cannot plant one).
    tables = {
        r.symbol: r.body["name"]
        for r in resources(bicep_trees)
        if r.file == RBAC and r.existing and r.type == "Microsoft.Storage/storageAccounts/tableServices/tables"
    }
    app = {
        a.symbol: a
        for a in deployed(bicep_trees, "Microsoft.Authorization/roleAssignments")
        if a.file == RBAC and accessor(a.properties["principalId"]) == "functionPrincipalId"
    }
    scopes = {a.body["scope"]: a.properties["roleDefinitionId"] for a in app.values() if a.body["scope"] in tables}
    assert scopes == {
        "resultsTable": "tableContributorRoleId",
        "latestTable": "tableContributorRoleId",
        "runsTable": "tableContributorRoleId",
        "exemptionsTable": "tableReaderRoleId",
    }, scopes
    assert {tables[t] for t in scopes} == {"resultsTableName", "latestTableName", "runsTableName", "exemptionsTableName"}
    assert not [a for a in app.values() if a.body["scope"] == "resultsStorage"], "no account-wide table role for the app"
    passed = module_params(bicep_trees, MAIN, "rbacUserAssigned")
    assert {k: accessor(passed[k]) for k in ("resultsTableName", "latestTableName", "runsTableName", "exemptionsTableName")} == {
        "resultsTableName": "tableNames.results",
        "latestTableName": "tableNames.latest",
        "runsTableName": "tableNames.runs",
        "exemptionsTableName": "tableNames.exemptions",
    }
    for assignment in app.values():
        assert assignment.properties["principalType"] == "ServicePrincipal"
    # The security team: a principal and type of its own, never the deployer.
    assert by_symbol["resultsTableReader"].conditional, "the human reader assignment must be optional"
    assert by_symbol["resultsTableReader"].body["scope"] == "resultsStorage"
    assert by_symbol["exemptionsTableContributor"].body["scope"] == "exemptionsTable"
    assert accessor(passed["readerPrincipalId"]) == "securityPrincipalId"
    assert accessor(passed["readerPrincipalType"]) == "securityPrincipalType"


# -- tenant-wide read access -------------------------------------------------------------------


def documented_actions() -> list[str]:
    """The actions listed in docs/deploy.md's custom-role table (rows starting with | `Microsoft.)."""
    text = DEPLOY_DOC.read_text()
    return re.findall(r"^\|\s*`(Microsoft\.[A-Za-z]+/[^`]+)`\s*\|", text, re.M)


def test_custom_role_actions_are_exactly_the_documented_list(bicep_trees: dict[str, Any]) -> None:
    tenant = bicep_trees[TENANT]
    assert tenant["globals"]["scope"]["value"] == "managementGroup"
    actions = tenant["variables"]["auditActions"]["value"]
    assert actions == [
        "Microsoft.Resources/subscriptions/read",
        "Microsoft.Web/sites/read",
        "Microsoft.Web/sites/slots/read",
        "Microsoft.ResourceGraph/resources/read",
    ]
    assert sorted(actions) == sorted(documented_actions()), "docs/deploy.md and the custom role disagree"
    assert all("*" not in a and a.endswith("/read") for a in actions), "read-only, no wildcards"
    role = deployed(bicep_trees, "Microsoft.Authorization/roleDefinitions")[0].properties
    assert role["type"] == "CustomRole"
    (permissions,) = role["permissions"]
    assert permissions["actions"] == "auditActions"
    assert permissions["notActions"] == [] and permissions["dataActions"] == [] and permissions["notDataActions"] == []
    assert [accessor(s) for s in role["assignableScopes"]] == ["management_group().id"]
    (assignment,) = [a for a in deployed(bicep_trees, "Microsoft.Authorization/roleAssignments") if a.file == TENANT]
    assert accessor(assignment.properties["roleDefinitionId"]) == "auditReaderRole.id"
    assert bicep_trees[TENANT]["parameters"]["principalType"]["default"] == "ServicePrincipal"


def test_no_built_in_reader_or_broad_role_is_assigned() -> None:
    text = _bicep_text()
    reader = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    contributor = "b24988ac-6180-42a0-ab88-20f7382dd24c"
    owner = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
    for role_id in (reader, contributor, owner):
        assert role_id not in text


def test_docs_explain_the_deploy(bicep_trees: dict[str, Any]) -> None:
    text = DEPLOY_DOC.read_text()
    for needle in (
        "azd up",
        "az deployment sub create",
        "az deployment mg create",
        "az role definition create",
        "az role assignment create",
        "Microsoft.Resources/deployments/*",
        "User Access Administrator",
        "Management Group Contributor",
        "Role Based Access Control Administrator",
        "AUDIT_SECURITY_PRINCIPAL_ID",
        "AUDIT_SECURITY_PRINCIPAL_TYPE",
        "removed by the next provision",
        "infra/hooks/postprovision.sh",
        "infra/tenant/audit-reader-role.bicep",
        "infra/tenant/audit-reader-role.json",
        "ClientCertAuditRuns",
        "Reader",
        "func azure functionapp publish",
        "az functionapp show",
        "clientCertMode",
        "AUDIT_TICKET_WEBHOOK_URL",
        "AUDIT_PER_RESOURCE_ALERTS",
        "Workbooks",
    ):
        assert needle in text, f"docs/deploy.md does not mention {needle!r}"
    for rule in deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules"):
        name = rule.properties["displayName"]
        assert name in text, f"docs/deploy.md does not explain the alert {name!r}"
    for kql in KQL_FILES:
        assert rel(kql) in text, f"docs/deploy.md does not point at {rel(kql)}"
    for heading in (
        "## Runbook 1: the subscription owner",
        "## Runbook 2: the tenant admin",
        "## Check the first run",
        "## A run that read nothing",
        "## Supply chain",
    ):
        assert re.search(rf"^{re.escape(heading)}", text, re.M), f"docs/deploy.md has no section {heading!r}"
    assert re.search(r"^## Alert routing", text, re.M)


def test_readme_deploy_section_links_the_walkthrough() -> None:
    text = README.read_text()
    match = re.search(r"^## Deploy\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no Deploy section"
    assert "docs/deploy.md" in match.group(1), "README.md (Deploy) must link docs/deploy.md"
    assert "azd up" in match.group(1)


def test_main_outputs_exist_for_the_docs() -> None:
    text = "".join(p.read_text() for p in (README, *sorted((REPO / "docs").glob("*.md"))))
    for used in set(re.findall(r"azd env get-value ([A-Z_]+)", text)):
        assert f"output {used} " in (INFRA / "main.bicep").read_text(), (
            f"docs use {used}, which main.bicep does not output"
        )


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_no_registry_modules_everything_is_local(bicep_trees: dict[str, Any]) -> None:
    for file, tree in bicep_trees.items():
        for symbol, module in (tree.get("modules") or {}).items():
            assert module["type"] == "local", f"{file}: module {symbol} is not a local file (no registry access)"
    assert _files_under(INFRA)


# -- alert rules: identity, routing, windows ---------------------------------------------------


def _rules(bicep_trees: dict[str, Any]) -> dict[str, Any]:
    return {r.symbol: r for r in deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules")}


def _duration_hours(iso: str) -> float:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", iso)
    assert match, f"not an ISO 8601 duration: {iso}"
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * 24 + hours + minutes / 60


def test_every_alert_rule_runs_as_its_own_identity_with_log_analytics_reader(bicep_trees: dict[str, Any]) -> None:
    rules = _rules(bicep_trees)
    assert set(rules) == {"newFailureAlert", "runDigestAlert", "missedRunAlert", "incompleteRunAlert"}
    readers = {
        accessor(a.properties["principalId"]): a
        for a in deployed(bicep_trees, "Microsoft.Authorization/roleAssignments")
        if a.file == ALERTS
    }
    role_var = bicep_trees[ALERTS]["variables"]["logAnalyticsReaderRoleId"]["value"]
    assert LOG_ANALYTICS_READER in json.dumps(role_var)
    for symbol, rule in rules.items():
        assert rule.body["identity"] == {"type": "SystemAssigned"}, f"{symbol} must run as its own identity"
        assignment = readers.get(f"{symbol}.identity.principalId")
        assert assignment, f"{symbol}'s identity has no role on the workspace"
        assert assignment.body["scope"] == "workspace"
        assert assignment.properties["roleDefinitionId"] == "logAnalyticsReaderRoleId"
        assert assignment.properties["principalType"] == "ServicePrincipal"
        assert assignment.conditional == rule.conditional, f"{symbol}: the assignment must exist exactly with its rule"
        assert [accessor(s) for s in rule.properties["scopes"]] == ["workspace.id"]
    assert len(readers) == len(rules), "an assignment without a rule"


def test_per_resource_rule_is_optional_and_routed_to_ticketing(bicep_trees: dict[str, Any]) -> None:
    rules = _rules(bicep_trees)
    assert rules["newFailureAlert"].conditional and not rules["runDigestAlert"].conditional
    alerts = bicep_trees[ALERTS]
    condition = alerts["resources"]["newFailureAlert"]["config"]["condition"]
    assert condition == "perResourceAlerts" and alerts["parameters"]["perResourceAlerts"]["default"] is True
    webhook = alerts["parameters"]["ticketWebhookUrl"]
    assert any(d["type"] == "secure" for d in webhook["decorators"]), "a webhook URL carries a secret"
    tickets = rules["newFailureAlert"].properties["actions"]["actionGroups"]["operator"]["operands"]
    assert [accessor(x) for x in tickets["true_value"]] == ["ticketActionGroup.id"] and tickets["false_value"] == []
    for symbol in ("runDigestAlert", "missedRunAlert", "incompleteRunAlert"):
        groups = rules[symbol].properties["actions"]["actionGroups"]
        assert [accessor(x) for x in groups] == ["actionGroup.id"], f"{symbol} goes to the email action group"
    ticket_group = next(
        r for r in deployed(bicep_trees, "Microsoft.Insights/actionGroups") if r.symbol == "ticketActionGroup"
    )
    assert ticket_group.conditional and "emailReceivers" not in ticket_group.properties
    (receiver,) = ticket_group.properties["webhookReceivers"]
    assert receiver["serviceUri"] == "ticketWebhookUrl" and receiver["useCommonAlertSchema"] is True
    main = module_params(bicep_trees, MAIN, "alerts")
    assert main["perResourceAlerts"] == "perResourceAlerts" and main["ticketWebhookUrl"] == "ticketWebhookUrl"


def test_stateless_rules_count_each_record_once_even_when_ingested_late(bicep_trees: dict[str, Any]) -> None:
    for symbol, rule in _rules(bicep_trees).items():
        p = rule.properties
        if p["autoMitigate"]:
            continue  # stateful (missed run): fires and resolves, counts nothing
        frequency, window = _duration_hours(p["evaluationFrequency"]), _duration_hours(p["windowSize"])
        assert window > frequency, f"{symbol}: a window equal to the frequency loses late records"
        (query,) = [c["query"] for c in p["criteria"]["allOf"]]
        filters = [
            int(n) / (60 if unit == "m" else 1) for n, unit in re.findall(r"\| where IngestedAt > ago\((\d+)([hm])\)", query)
        ]
        assert filters and filters == [frequency], (
            f"{symbol}: select by ingestion_time() within the last evaluationFrequency ({frequency} h)"
        )
        assert "IngestedAt = ingestion_time()" in query
        assert "overrideQueryTimeRange" not in p
    text = (INFRA / "app" / "alerts.bicep").read_text()
    assert "Exactly once, even when ingested late" in text, "the reasoning is written next to the rules"
    # the per-resource rule keeps up with the change poll: minutes, not an hour
    assert _duration_hours(_rules(bicep_trees)["newFailureAlert"].properties["evaluationFrequency"]) <= 5 / 60


def test_missed_run_rule_is_stateful_and_total_without_apptraces(bicep_trees: dict[str, Any]) -> None:
    rule = _rules(bicep_trees)["missedRunAlert"].properties
    assert rule["autoMitigate"] is True
    (criterion,) = rule["criteria"]["allOf"]
    assert criterion["metricMeasureColumn"] == "Runs" and criterion["operator"] == "LessThan"
    assert criterion["threshold"] == 1
    assert criterion["query"].lstrip().startswith("union isfuzzy=true"), "must not fail before AppTraces exists"
    assert _duration_hours(rule["overrideQueryTimeRange"]) >= 26


def test_digest_alert_reports_the_count_and_the_report_command(bicep_trees: dict[str, Any]) -> None:
    rule = _rules(bicep_trees)["runDigestAlert"].properties
    (criterion,) = rule["criteria"]["allOf"]
    assert {d["name"] for d in criterion["dimensions"]} == {"RunId", "NewFailures", "Report"}
    assert "| where NewFailures > 0" in criterion["query"]
    assert 'strcat("clientcert-audit report --run ", RunId, " --new")' in criterion["query"]
    assert "clientcert-audit report --run" in rule["actions"]["customProperties"]["Report"]
    assert rule["autoMitigate"] is False


# -- tenant role: the CLI path grants exactly what the Bicep grants -----------------------------


def role_json_mismatches(data: dict[str, Any], bicep_trees: dict[str, Any]) -> list[str]:
    """How the `az role definition create` JSON differs from the Bicep custom role ([] if not)."""
    tenant = bicep_trees[TENANT]
    role = deployed(bicep_trees, "Microsoft.Authorization/roleDefinitions")[0].properties
    (permissions,) = role["permissions"]
    wanted: dict[str, Any] = {
        "Name": tenant["parameters"]["roleName"]["default"],
        "IsCustom": True,
        "Description": role["description"],
        "Actions": sorted(tenant["variables"]["auditActions"]["value"]),
        "NotActions": permissions["notActions"],
        "DataActions": permissions["dataActions"],
        "NotDataActions": permissions["notDataActions"],
        "AssignableScopes": ["/providers/Microsoft.Management/managementGroups/MANAGEMENT_GROUP_ID"],
    }
    given = {k: sorted(v) if k == "Actions" and isinstance(v, list) else v for k, v in data.items()}
    problems = [f"{k}: {given.get(k)!r} != {v!r}" for k, v in wanted.items() if given.get(k) != v]
    problems += [f"unexpected key {k}" for k in sorted(set(data) - set(wanted))]
    if isinstance(data.get("Actions"), list) and len(set(data["Actions"])) != len(data["Actions"]):
        problems.append("duplicate actions")
    return problems


def test_role_definition_json_matches_the_bicep_role(bicep_trees: dict[str, Any]) -> None:
    data = json.loads((INFRA / "tenant" / "audit-reader-role.json").read_text())
    assert role_json_mismatches(data, bicep_trees) == []
    assert data["NotActions"] == data["DataActions"] == data["NotDataActions"] == []


def test_the_role_json_check_catches_a_difference(bicep_trees: dict[str, Any]) -> None:
    data = json.loads((INFRA / "tenant" / "audit-reader-role.json").read_text())
    widened = {**data, "Actions": [*data["Actions"], "Microsoft.Web/sites/config/list/action"]}
    assert any(p.startswith("Actions:") for p in role_json_mismatches(widened, bicep_trees))
    narrowed = {**data, "Actions": data["Actions"][1:]}
    assert any(p.startswith("Actions:") for p in role_json_mismatches(narrowed, bicep_trees))
    data_action = {**data, "DataActions": ["Microsoft.Storage/storageAccounts/tableServices/tables/entities/read"]}
    assert any(p.startswith("DataActions:") for p in role_json_mismatches(data_action, bicep_trees))


# -- workbook ----------------------------------------------------------------------------------


def test_workbook_is_deployed_with_its_json(bicep_trees: dict[str, Any]) -> None:
    (workbook,) = deployed(bicep_trees, "Microsoft.Insights/workbooks")
    p = workbook.properties
    assert workbook.body["kind"] == "shared" and p["version"] == "Notebook/1.0" and p["category"] == "workbook"
    call = function_call(p["serializedData"])
    assert call and call[0] == "replace"
    loaded = function_call(call[1][0])
    assert loaded and loaded[0] == "load_text_content" and loaded[1][0] == "workbook.json", loaded
    assert call[1][1] == "__WORKSPACE_ID__" and call[1][2] == "logAnalyticsWorkspaceId"
    assert p["sourceId"] == "logAnalyticsWorkspaceId"
    assert accessor(module_params(bicep_trees, MAIN, "workbook")["logAnalyticsWorkspaceId"]) == (
        "monitoring.outputs.logAnalyticsWorkspaceId"
    )


# -- small things --------------------------------------------------------------------------------


def test_azure_yaml_links_only_to_files_that_exist() -> None:
    text = (REPO / "azure.yaml").read_text()
    links = re.findall(r"(?<![\w/.])((?:[\w.-]+/)*[\w.-]+\.md)\b", text)
    assert links, "azure.yaml should point at the deploy walk-through"
    for link in links:
        assert (REPO / link).is_file(), f"azure.yaml links to {link}, which does not exist"
    assert "docs/deploy.md" in links


def test_no_website_time_zone_on_flex_consumption() -> None:
    # Flex Consumption does not support WEBSITE_TIME_ZONE; the schedule is UTC.
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            assert "WEBSITE_TIME_ZONE" not in path.read_text(), f"{rel(path)} mentions WEBSITE_TIME_ZONE"


#: Built-in role definitions the runbooks cite (id: role name), as Microsoft documents them
#: (learn.microsoft.com, "Azure built-in roles"; the ids are the same in every tenant).
CITED_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "5d58bcaf-24a5-4b20-bdb6-eed9f69fbe4c": "Management Group Contributor",
}


def test_the_runbooks_cite_each_role_by_its_built_in_definition() -> None:
    text = DEPLOY_DOC.read_text()
    runbooks = text[text.index("## Runbook 1") : text.index("## Identity")]
    for role_id, name in CITED_ROLES.items():
        assert re.search(rf"\*\*{re.escape(name)}\*\*\s+\(`{role_id}`", runbooks), f"{name} ({role_id}) is not cited"
    tenant_admin = runbooks[runbooks.index("## Runbook 2") :]
    # The old claim, wrong: Management Group Contributor has no Microsoft.Resources/deployments/*.
    assert "Management Group Contributor together with User Access Administrator" not in text
    assert "Not enough" in tenant_admin and "Management Group Contributor" in tenant_admin
    for runbook in runbooks.split("## Runbook")[1:]:
        assert "**Rights**" in runbook and "**Commands**" in runbook
        assert re.search(r"\*\*What you (send|receive)", runbook), "each runbook says what is handed over"


def test_azure_yaml_runs_the_postprovision_hook() -> None:
    text = (REPO / "azure.yaml").read_text()
    hook = re.search(r"^hooks:\n  postprovision:\n    posix:\n      shell: sh\n      run: (\S+)$", text, re.M)
    assert hook, "azure.yaml needs a posix postprovision hook"
    assert (REPO / hook.group(1)).is_file()
    assert (REPO / hook.group(1)).stat().st_mode & 0o111, "the hook must be executable"


def test_the_deploy_guide_describes_the_blind_run_as_the_code_makes_it() -> None:
    """Runs before the tenant role exists are described with the outcome and exit code they really get."""
    from shared.commands.common import ExitCode
    from shared.run.ledger import BLIND

    text = DEPLOY_DOC.read_text()
    section = text[text.index("## A run that read nothing") : text.index("## Supply chain")]
    assert f"**`{BLIND}`**" in section and f"exits **{int(ExitCode.BLIND)}**" in section
    assert "Client Certificate Auditor (read-only)" in section and "Runbook 2" in section
    hook = (REPO / "infra" / "hooks" / "postprovision.sh").read_text()
    assert f'"{BLIND}"' in hook and "A run that read nothing" in hook
