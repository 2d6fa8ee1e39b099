// Optional user-assigned identity for the Function app (main.bicep: useUserAssignedIdentity).

@description('Name of the identity.')
param name string

@description('Azure region of the identity.')
param location string = resourceGroup().location

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output id string = identity.id

@description('Object (principal) id, the subject of role assignments.')
output principalId string = identity.properties.principalId

@description('Client (application) id, set as AZURE_CLIENT_ID in the app.')
output clientId string = identity.properties.clientId
