// Data-plane role assignments inside the resource group. Nothing here reaches outside it; the
// tenant-wide read access lives in ../tenant/audit-reader-role.bicep.
// Every assignment is named guid(scope, principalId, roleDefinitionId), so redeploying is
// idempotent and two principals never collide.

@description('Object id of the identity the Function app runs as.')
param functionPrincipalId string

@description('Name of the storage account holding the audit result tables.')
param resultsStorageAccountName string

@description('Name of the storage account used by the Functions host and the deployment package.')
param hostStorageAccountName string

@description('Name of the Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Name of the results table (one row per resource per run), which the app writes and prunes.')
param resultsTableName string = 'ClientCertAudit'

@description('Name of the last-known-state table, which the app writes.')
param latestTableName string = 'ClientCertAuditLatest'

@description('Name of the runs table (run records, the lease, the subscription registry, the change watermark), which the app writes.')
param runsTableName string = 'ClientCertAuditRuns'

@description('Name of the exemptions table: the app only reads it; readerPrincipalId (the security team) writes it.')
param exemptionsTableName string = 'ClientCertAuditExemptions'

@description('Optional object id of the security team (a user or group): read access to every result table, write access to the exemptions table only. Empty: none.')
param readerPrincipalId string = ''

@description('Type of readerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param readerPrincipalType string = 'User'

// Built-in role definition ids (identical in every tenant).
var roles = {
  // Read, insert, update and delete table entities: the audit upserts results, the latest view
  // and run records and prunes rows older than AUDIT_RETENTION_DAYS (each assignment on one table).
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Read table entities only: the app on the exemptions table, people on the results.
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
  // The role Microsoft documents for identity-based AzureWebJobsStorage: the host creates its
  // containers and takes blob leases (timer singleton locks, schedule status) and the platform
  // reads the Flex deployment package from the same account.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Publish telemetry with an Entra ID token (Application Insights has local auth disabled).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource resultsStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: resultsStorageAccountName
}

resource resultsTableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: resultsStorage
  name: 'default'
}

resource resultsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: resultsTableService
  name: resultsTableName
}

resource latestTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: resultsTableService
  name: latestTableName
}

resource runsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: resultsTableService
  name: runsTableName
}

resource exemptionsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: resultsTableService
  name: exemptionsTableName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var tableContributorRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
var tableReaderRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
var blobOwnerRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
var metricsPublisherRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)

// The app's table rights, each scoped to one table (least privilege): write on the three tables
// it writes, read only on the exemptions table. Whoever can deploy code to the app can therefore
// not plant an exemption; only the security team (readerPrincipalId) writes that table.
resource resultsTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resultsTable.id, functionPrincipalId, tableContributorRoleId)
  scope: resultsTable
  properties: {
    roleDefinitionId: tableContributorRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Client-certificate auditor writes (and prunes) its result rows.'
  }
}

resource latestTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(latestTable.id, functionPrincipalId, tableContributorRoleId)
  scope: latestTable
  properties: {
    roleDefinitionId: tableContributorRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Client-certificate auditor writes the last known state.'
  }
}

resource runsTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(runsTable.id, functionPrincipalId, tableContributorRoleId)
  scope: runsTable
  properties: {
    roleDefinitionId: tableContributorRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Client-certificate auditor writes run records, the run lease and the subscription registry.'
  }
}

resource exemptionsTableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(exemptionsTable.id, functionPrincipalId, tableReaderRoleId)
  scope: exemptionsTable
  properties: {
    roleDefinitionId: tableReaderRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Client-certificate auditor reads the exemptions (only the security team writes them).'
  }
}

resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, functionPrincipalId, blobOwnerRoleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: blobOwnerRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage (AzureWebJobsStorage) and Flex deployment package.'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, functionPrincipalId, metricsPublisherRoleId)
  scope: applicationInsights
  properties: {
    roleDefinitionId: metricsPublisherRoleId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Identity-based telemetry ingestion (local auth is disabled).'
  }
}

resource resultsTableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(readerPrincipalId)) {
  name: guid(resultsStorage.id, readerPrincipalId, tableReaderRoleId)
  scope: resultsStorage
  properties: {
    roleDefinitionId: tableReaderRoleId
    principalId: readerPrincipalId
    principalType: readerPrincipalType
    description: 'Read the client-certificate audit results.'
  }
}

// Exemptions are the security team's decision (clientcert-audit exempt add): write access to
// that one table, scoped to the table itself, not to the results.
resource exemptionsTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(readerPrincipalId)) {
  name: guid(exemptionsTable.id, readerPrincipalId, tableContributorRoleId)
  scope: exemptionsTable
  properties: {
    roleDefinitionId: tableContributorRoleId
    principalId: readerPrincipalId
    principalType: readerPrincipalType
    description: 'Manage client-certificate audit exemptions.'
  }
}
