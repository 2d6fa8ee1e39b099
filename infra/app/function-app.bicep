// The auditor itself: a Linux Function app on the Flex Consumption (FC1) plan.
// - managed identity only (system-assigned, or a user-assigned identity when one is passed);
// - host storage, deployment package storage and Application Insights all reached with that
//   identity (no connection strings with keys, no instrumentation-key ingestion);
// - HTTPS only, TLS 1.2+, FTP(S) off, basic-auth publishing off;
// - incoming client certificates REQUIRED by default: the app serves no HTTP at all (timer
//   trigger only), and it must pass its own audit. A parameter, because Flex Consumption
//   documents some certificate features as unsupported: if a tenant's platform refuses the
//   setting, or publishing through the SCM endpoint is refused, docs/deploy.md says what to do.

@description('Name of the Function app (globally unique; becomes <name>.azurewebsites.net).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the plan and the app (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Tags applied to the plan and the app; the app also gets azd-service-name.')
param tags object = {}

@description('azd service name from azure.yaml; `azd deploy` finds the app by this tag.')
param serviceName string = 'audit'

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Name of the existing storage account used by the Functions host and for the deployment package.')
param hostStorageAccountName string

@description('Blob container (in the host storage account) that holds the deployment package.')
param deploymentContainerName string

@description('Name of the existing Application Insights component.')
param applicationInsightsName string

@description('Which managed identity the app runs as. UserAssigned (default): the identity given by userAssignedIdentityId, which exists before the app, so its role assignments do too. SystemAssigned: the app\'s own identity, deleted with the app.')
@allowed([
  'SystemAssigned'
  'UserAssigned'
])
param identityType string = 'UserAssigned'

@description('Resource id of the user-assigned identity to run as (identityType UserAssigned). Empty otherwise.')
param userAssignedIdentityId string = ''

@description('Client id of that user-assigned identity (sets AZURE_CLIENT_ID). Empty with a system-assigned identity.')
param userAssignedIdentityClientId string = ''

@description('Application settings of the audit (AUDIT_*); merged with the identity-based host settings.')
param appSettings object = {}

@description('Enable incoming client certificates on this app (clientCertEnabled). Default true: the app has no HTTP trigger and passes its own audit.')
param clientCertEnabled bool = true

@description('Client certificate mode when clientCertEnabled is true. Required (default) makes the app pass its own audit; anything else, or clientCertEnabled false, makes it a FAIL in its own report (exempt it if that is a decision).')
@allowed([
  'Required'
  'Optional'
  'OptionalInteractiveUser'
])
param clientCertMode string = 'Required'

@description('Upper bound of instances. 40 is the smallest value Flex Consumption accepts; a nightly timer uses one.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var useUserAssigned = identityType == 'UserAssigned'

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: A nightly timer tolerates a zone outage (the next run catches up), and zone-redundant Flex plans exist only in some regions.
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Identity-based settings only. The host of a timer-only app needs blob storage alone (timer
// schedule status and singleton locks); no queue or table service URI is configured, so the
// identity needs no queue or table role on this account.
// APPLICATIONINSIGHTS_CONNECTION_STRING carries no secret because
// the component has local auth disabled; APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes the
// host ingest with the app's identity.
var hostSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__blobServiceUri: hostStorage.properties.primaryEndpoints.blob
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: useUserAssigned ? 'ClientId=${userAssignedIdentityClientId};Authorization=AAD' : 'Authorization=AAD'
}

// With a user-assigned identity, DefaultAzureCredential in the audit code and the host's storage
// connection must be told which identity to use.
var userAssignedSettings = useUserAssigned ? {
  AzureWebJobsStorage__clientId: userAssignedIdentityClientId
  AZURE_CLIENT_ID: userAssignedIdentityClientId
} : {}

var allSettings = union(appSettings, hostSettings, userAssignedSettings)

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: identityType
    userAssignedIdentities: useUserAssigned ? {
      '${userAssignedIdentityId}': {}
    } : null
  }
  // Reviewed checkov findings that do not apply to this app:
  // checkov:skip=CKV_AZURE_222: Publishing (azd deploy, func publish, config-zip) reaches the app's SCM endpoint over the public network with an Entra ID token; the app itself has no HTTP trigger and rejects every request without a client certificate.
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed worker count (siteConfig.numberOfWorkers); a nightly timer needs no standby instance.
  // checkov:skip=CKV_AZURE_213: No HTTP endpoint to probe: the app is timer-triggered and requires client certificates, so health-check pings would fail and recycle healthy instances.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // The app has no HTTP trigger. Requiring a client certificate closes the default hostname to
    // every caller and makes our own app pass our own audit (ClientCertMode = Required).
    clientCertEnabled: clientCertEnabled
    clientCertMode: clientCertMode
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: useUserAssigned ? {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: userAssignedIdentityId
          } : {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Publishing uses Entra ID (azd / func / az CLI tokens); FTP and SCM basic auth are off.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the Function app.')
output name string = functionApp.name

@description('Resource id of the Function app.')
output id string = functionApp.id

@description('Object id of the system-assigned identity; empty when a user-assigned identity is used.')
output systemAssignedPrincipalId string = useUserAssigned ? '' : functionApp.identity.principalId
