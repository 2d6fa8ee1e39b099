// A storage account that only accepts Microsoft Entra ID (no account keys, no SAS signed with
// keys, no anonymous blob access, no local SFTP users), TLS 1.2+ over HTTPS only.
// Used twice by main.bicep: once for the Functions host (blob: deployment package, timer locks)
// and once for the audit results (tables).

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the account.')
param location string = resourceGroup().location

@description('Tags applied to the account.')
param tags object = {}

@description('Replication SKU. Standard_GZRS: zone-redundant in the primary region plus a copy in the paired region. In a region without zones use Standard_GRS; without a paired region, Standard_ZRS.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_GZRS'

@description('Blob containers to create (private; no anonymous access is possible on this account).')
param containerNames array = []

@description('Tables to create.')
param tableNames array = []

@description('Days deleted blobs and containers stay recoverable (soft delete). 0 turns soft delete off.')
@minValue(0)
@maxValue(365)
param blobSoftDeleteDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    // No keys: every request must carry an Entra ID token checked against RBAC.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    // A Flex Consumption app without VNet integration reaches storage over the public endpoint;
    // it authenticates with its managed identity, and shared keys are disabled above.
    // checkov:skip=CKV_AZURE_59: Reachable over the public endpoint on purpose (the app has no VNet integration, and the security team reads results from its own network); every request needs an Entra ID token with a data-plane role, since shared keys and anonymous access are disabled.
    // checkov:skip=CKV_AZURE_35: Same reason: the Flex Consumption app has no fixed outbound addresses to allow-list and is not a trusted Azure service for the firewall bypass.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}
resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: blobSoftDeleteDays > 0
      days: blobSoftDeleteDays > 0 ? blobSoftDeleteDays : null
    }
    containerDeleteRetentionPolicy: {
      enabled: blobSoftDeleteDays > 0
      days: blobSoftDeleteDays > 0 ? blobSoftDeleteDays : null
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobServices
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableServices
  name: tableName
}]

@description('Name of the account.')
output name string = storage.name

@description('Resource id of the account.')
output id string = storage.id

@description('Blob service endpoint (ends with a slash).')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Queue service endpoint (ends with a slash).')
output queueEndpoint string = storage.properties.primaryEndpoints.queue

@description('Table service endpoint (ends with a slash).')
output tableEndpoint string = storage.properties.primaryEndpoints.table
