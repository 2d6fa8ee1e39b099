// The audit's dashboard in the portal: an Azure Monitor workbook over the workspace's AppTraces.
// Its definition is workbook.json (queries checked by tests/infra with the Kusto language
// service, like the alert rules); __WORKSPACE_ID__ there becomes the workspace's resource id, the
// resource every query runs against. Shows: the PASS/WARN/FAIL/EXEMPT/ERROR trend per run,
// the new failures of the last runs, and run health (last run, duration, partial or failed,
// unreadable subscriptions). Portal: Monitor > Workbooks, or the workspace's Workbooks blade.

@description('Resource id of the Log Analytics workspace the workbook queries.')
param logAnalyticsWorkspaceId string

@description('Azure region of the workbook.')
param location string = resourceGroup().location

@description('Tags applied to the workbook.')
param tags object = {}

@description('Display name of the workbook in the portal.')
param displayName string = 'Client certificate audit'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; stable per resource group and workspace.
  name: guid(resourceGroup().id, logAnalyticsWorkspaceId, 'clientcert-audit-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: logAnalyticsWorkspaceId
    serializedData: replace(loadTextContent('workbook.json'), '__WORKSPACE_ID__', logAnalyticsWorkspaceId)
  }
}

@description('Resource id of the workbook.')
output id string = workbook.id
