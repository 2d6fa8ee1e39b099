// Client-certificate auditor: everything except the tenant-wide read role.
// Deploy with `azd up`, or `az deployment sub create -l <region> -f infra/main.bicep -p ...`.
// Then grant tenant-wide read access (infra/tenant/; see docs/deploy.md, "Grant tenant-wide read access").
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd environment name). Seeds the unique suffix of every resource name and names the resource group rg-<environmentName>.')
param environmentName string

// The regions that offer Flex Consumption, as the Azure-Samples Flex Consumption azd templates list
// them (functions-quickstart-python-http-azd, infra/main.bicep), less the canary region eastus2euap:
// a wrong region fails at azd's prompt, not half-way through the deployment. Check a region with
// `az functionapp list-flexconsumption-locations -o table` and add it here when Azure adds one.
@minLength(1)
@description('Region of every resource: one that offers the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group to create. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('NCRONTAB schedule of the audit (AUDIT_SCHEDULE, six fields, always UTC: Flex Consumption does not support a time zone setting). Default: 02:00 UTC every day.')
param auditSchedule string = '0 0 2 * * *'

@description('NCRONTAB schedule of the change poll (AUDIT_CHANGES_SCHEDULE), which re-audits apps whose settings changed within minutes; \'off\' disables it. Default: every 10 minutes.')
param auditChangesSchedule string = '0 */10 * * * *'

@description('Comma-separated subscription ids to audit (AUDIT_SUBSCRIPTIONS). Empty: every subscription the identity can read.')
param auditSubscriptions string = ''

@description('Days audit result rows are kept before the audit prunes them (AUDIT_RETENTION_DAYS).')
@minValue(1)
@maxValue(3650)
param auditRetentionDays int = 400

@description('Parallel ARM requests of one run (AUDIT_CONCURRENCY).')
@minValue(1)
@maxValue(64)
param auditConcurrency int = 8

@description('Minutes each change poll looks back before its watermark (AUDIT_CHANGES_OVERLAP_MINUTES): Resource Graph is eventually consistent.')
@minValue(1)
@maxValue(1440)
param auditChangesOverlapMinutes int = 30

@description('Comma-separated tag names read, in order and case-insensitively, as a resource\'s owner (AUDIT_OWNER_TAGS).')
param auditOwnerTags string = 'owner,team,contact'

@description('Tag read as an exemption request listed for the security team, never as an exemption (AUDIT_EXEMPTION_REQUEST_TAG). Empty: off.')
param auditExemptionRequestTag string = ''

@description('Timeout in seconds of each step of one HTTP request: the TLS handshake of a new connection, sending, the answer (AUDIT_HTTP_TIMEOUT); one logical call is bounded by twice this.')
@minValue(1)
@maxValue(600)
param auditHttpTimeout int = 60

@description('Retries per call on 429, 5xx and connection errors (AUDIT_RETRY_TOTAL).')
@minValue(0)
@maxValue(10)
param auditRetryTotal int = 4

@description('Minutes after which a run starts no new ARM call; unfinished subscriptions become ERROR rows (AUDIT_RUN_DEADLINE_MINUTES).')
@minValue(1)
@maxValue(1440)
param auditRunDeadlineMinutes int = 45

@description('Seconds of the run lease (AUDIT_LEASE_SECONDS), at least 60; a crashed run\'s lease expires after this.')
@minValue(60)
@maxValue(86400)
param auditLeaseSeconds int = 600

@description('Inventory source (AUDIT_INVENTORY_SOURCE): arm lists sites per subscription, resourcegraph queries Azure Resource Graph.')
@allowed([
  'arm'
  'resourcegraph'
])
param auditInventorySource string = 'arm'

@description('Python version of the Function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Run the app as a user-assigned identity (default; sets AZURE_CLIENT_ID), as the Azure-Samples Flex Consumption templates do: it and its role assignments exist before the app, so the first deployment does not race role propagation, and the tenant-wide role assignment survives re-creating the app. false: the app\'s system-assigned identity.')
param useUserAssignedIdentity bool = true

@description('Enable incoming client certificates on the auditor\'s own app (clientCertEnabled). Default true; see docs/deploy.md if Flex Consumption refuses it in your region.')
param appClientCertEnabled bool = true

@description('Client certificate mode of the auditor\'s own app. Required (default): the app passes its own audit.')
@allowed([
  'Required'
  'Optional'
  'OptionalInteractiveUser'
])
param appClientCertMode string = 'Required'

@description('Comma-separated email addresses notified by the run digest, missed-run and incomplete-run alerts (a string, so azd can pass it from AUDIT_ALERT_EMAILS). Empty: no receivers; alerts still fire and are visible in Azure Monitor.')
param alertEmailAddresses string = ''

@description('Create the per-resource alert rule (one alert per web app or slot that newly fails), meant for a ticketing webhook. The per-run digest is always created.')
param perResourceAlerts bool = true

@description('HTTPS webhook of a ticketing system for the per-resource alerts (common alert schema). Empty: per-resource alerts notify nobody and show in Azure Monitor only.')
@secure()
param ticketWebhookUrl string = ''

@description('Object id of the security team, preferably a group (AUDIT_SECURITY_PRINCIPAL_ID): Storage Table Data Reader on the results account and Storage Table Data Contributor on the exemptions table only. Deliberately not the deployer: whoever runs azd up gets no data access. Empty: none.')
param securityPrincipalId string = ''

@description('Type of securityPrincipalId (AUDIT_SECURITY_PRINCIPAL_TYPE); a role assignment with the wrong type fails with UnmatchedPrincipalType.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param securityPrincipalType string = 'Group'

@description('Replication of both storage accounts. Standard_GZRS by default (zone- and geo-redundant audit evidence); Standard_GRS in a region without zones, Standard_ZRS in a region without a pair.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_GZRS'

@description('Days the Log Analytics workspace keeps the audit events.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 90

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'clientcert-audit'
}

var functionAppName = '${abbrs.webSitesFunctions}certaudit-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

// The four tables the audit uses; the code creates them too if they are missing.
var tableNames = {
  results: 'ClientCertAudit'
  latest: 'ClientCertAuditLatest'
  runs: 'ClientCertAuditRuns'
  exemptions: 'ClientCertAuditExemptions'
}

var alertEmails = empty(trim(alertEmailAddresses)) ? [] : split(replace(alertEmailAddresses, ' ', ''), ',')

// environment().resourceManager ends with a slash; the code expects none.
var armEndpoint = endsWith(environment().resourceManager, '/') ? substring(environment().resourceManager, 0, length(environment().resourceManager) - 1) : environment().resourceManager

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'core/security/user-assigned-identity.bicep' = if (useUserAssignedIdentity) {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}certaudit-${resourceToken}'
    location: location
    tags: tags
  }
}

module hostStorage 'core/storage/storage-account.bicep' = {
  name: 'host-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}fn${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    containerNames: [
      deploymentContainerName
    ]
  }
}

module resultsStorage 'core/storage/storage-account.bicep' = {
  name: 'results-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}audit${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    tableNames: [
      tableNames.results
      tableNames.latest
      tableNames.runs
      tableNames.exemptions
    ]
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

// primaryEndpoints.table ends with a slash; the code expects none.
var tableServiceUri = resultsStorage.outputs.tableEndpoint
var auditTableServiceUri = endsWith(tableServiceUri, '/') ? substring(tableServiceUri, 0, length(tableServiceUri) - 1) : tableServiceUri

// With the user-assigned identity (default), the identity's role assignments are made before the
// app exists (dependsOn below), so the app's first start and the first `azd deploy` find them.
module rbacUserAssigned 'app/rbac.bicep' = if (useUserAssignedIdentity) {
  name: 'rbac'
  scope: rg
  params: {
    functionPrincipalId: identity.outputs.principalId
    resultsStorageAccountName: resultsStorage.outputs.name
    hostStorageAccountName: hostStorage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    resultsTableName: tableNames.results
    latestTableName: tableNames.latest
    runsTableName: tableNames.runs
    exemptionsTableName: tableNames.exemptions
    readerPrincipalId: securityPrincipalId
    readerPrincipalType: securityPrincipalType
  }
}

// The app settings below are the app's WHOLE app-settings list: a setting added by hand (portal, or
// az functionapp config appsettings set) is removed by the next azd provision. Every setting the
// code reads is a parameter here, mapped from azd in main.parameters.json (docs/deploy.md, Settings).
module functionApp 'app/function-app.bicep' = {
  name: 'function'
  scope: rg
  dependsOn: [
    rbacUserAssigned
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'audit'
    pythonVersion: pythonVersion
    hostStorageAccountName: hostStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityType: useUserAssignedIdentity ? 'UserAssigned' : 'SystemAssigned'
    userAssignedIdentityId: useUserAssignedIdentity ? identity.outputs.id : ''
    userAssignedIdentityClientId: useUserAssignedIdentity ? identity.outputs.clientId : ''
    clientCertEnabled: appClientCertEnabled
    clientCertMode: appClientCertMode
    // Every setting the audit reads, each from a parameter. AUDIT_TABLE_CONNECTION_STRING is for local
    // development only and is deliberately absent: the deployed app reaches tables with its identity.
    appSettings: {
      AUDIT_SCHEDULE: auditSchedule
      AUDIT_CHANGES_SCHEDULE: auditChangesSchedule
      AUDIT_ARM_ENDPOINT: armEndpoint
      AUDIT_TABLE_SERVICE_URI: auditTableServiceUri
      AUDIT_RESULTS_TABLE: tableNames.results
      AUDIT_LATEST_TABLE: tableNames.latest
      AUDIT_RUNS_TABLE: tableNames.runs
      AUDIT_EXEMPTIONS_TABLE: tableNames.exemptions
      AUDIT_SUBSCRIPTIONS: auditSubscriptions
      AUDIT_RETENTION_DAYS: string(auditRetentionDays)
      AUDIT_CONCURRENCY: string(auditConcurrency)
      AUDIT_INVENTORY_SOURCE: auditInventorySource
      AUDIT_CHANGES_OVERLAP_MINUTES: string(auditChangesOverlapMinutes)
      AUDIT_OWNER_TAGS: auditOwnerTags
      AUDIT_EXEMPTION_REQUEST_TAG: auditExemptionRequestTag
      AUDIT_HTTP_TIMEOUT: string(auditHttpTimeout)
      AUDIT_RETRY_TOTAL: string(auditRetryTotal)
      AUDIT_RUN_DEADLINE_MINUTES: string(auditRunDeadlineMinutes)
      AUDIT_LEASE_SECONDS: string(auditLeaseSeconds)
    }
  }
}

var functionPrincipalId = useUserAssignedIdentity ? identity.outputs.principalId : functionApp.outputs.systemAssignedPrincipalId

// With the system-assigned identity, the identity exists only once the app does.
module rbacSystemAssigned 'app/rbac.bicep' = if (!useUserAssignedIdentity) {
  name: 'rbac-system-assigned'
  scope: rg
  params: {
    functionPrincipalId: functionApp.outputs.systemAssignedPrincipalId
    resultsStorageAccountName: resultsStorage.outputs.name
    hostStorageAccountName: hostStorage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    resultsTableName: tableNames.results
    latestTableName: tableNames.latest
    runsTableName: tableNames.runs
    exemptionsTableName: tableNames.exemptions
    readerPrincipalId: securityPrincipalId
    readerPrincipalType: securityPrincipalType
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    logAnalyticsWorkspaceName: monitoring.outputs.logAnalyticsWorkspaceName
    location: location
    tags: tags
    namePrefix: '${abbrs.insightsScheduledQueryRules}certaudit-'
    actionGroupName: '${abbrs.insightsActionGroups}certaudit-${resourceToken}'
    alertEmailAddresses: alertEmails
    perResourceAlerts: perResourceAlerts
    ticketWebhookUrl: ticketWebhookUrl
    functionAppName: functionAppName
  }
}

module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    location: location
    tags: tags
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_PRINCIPAL_ID string = functionPrincipalId
output AZURE_RESULTS_STORAGE_ACCOUNT string = resultsStorage.outputs.name
output AUDIT_TABLE_SERVICE_URI string = auditTableServiceUri
output AUDIT_RUNS_TABLE string = tableNames.runs
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.logAnalyticsCustomerId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
