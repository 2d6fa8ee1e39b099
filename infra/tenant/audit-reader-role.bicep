// Tenant-wide read access for the auditor, deployed separately from main.bicep because it needs
// rights at a management group (by default the tenant root group, whose id is the tenant id):
//
//   az deployment mg create --management-group-id <tenant-id> --location <region> \
//     --template-file infra/tenant/audit-reader-role.bicep \
//     --parameters principalId=<AZURE_FUNCTION_PRINCIPAL_ID>
//
// That command needs Microsoft.Resources/deployments/* at the management group (Owner, or
// Contributor/Management Group Contributor there, plus the right to write role definitions and
// assignments). User Access Administrator - what "elevate access" grants - has only
// Microsoft.Authorization/*. For those admins, audit-reader-role.json next to this file is the
// same role for `az role definition create` + `az role assignment create` (docs/deploy.md,
// "Grant tenant-wide read access", path B). tests/infra checks both grant the same actions.
//
// It defines a custom role with only the read actions the audit uses and assigns it to the
// Function app's identity at this management group, so every subscription below it is audited.
// Why not the built-in Reader role: Reader is `*/read` on every resource type in the tenant
// (Key Vault and network configuration, deployment history with its parameters, storage and
// database settings, ...). This identity runs unattended every night; if it were ever misused,
// this role exposes App Service site and slot metadata only.
targetScope = 'managementGroup'

@description('Object (principal) id of the Function app\'s identity: the AZURE_FUNCTION_PRINCIPAL_ID output of main.bicep (`azd env get-value AZURE_FUNCTION_PRINCIPAL_ID`).')
param principalId string

@description('Type of principalId. A managed identity is a ServicePrincipal.')
@allowed([
  'ServicePrincipal'
  'Group'
  'User'
])
param principalType string = 'ServicePrincipal'

@description('Display name of the custom role (unique in the tenant).')
param roleName string = 'Client Certificate Auditor (read-only)'

// The complete list of what the audit does in Azure Resource Manager. Each entry is needed:
var auditActions = [
  // List the subscriptions the identity can see (GET /subscriptions) and read each one.
  // A subscription in which the identity holds no role is not listed at all, so this role
  // assigned at the management group is what makes every subscription below it visible.
  'Microsoft.Resources/subscriptions/read'
  // List web apps and function apps (GET .../providers/Microsoft.Web/sites, and per group with
  // includeSlots=true), and GET each site the change poll names. The site object carries
  // clientCertEnabled, clientCertMode and clientCertExclusionPaths, everything the audit
  // evaluates. (Site configuration and app settings are not read.)
  'Microsoft.Web/sites/read'
  // List and read deployment slots: GET .../sites/{name}/slots, and the change poll's GET of
  // each changed slot. Slots have their own client-certificate setting and are audited as
  // separate resources.
  'Microsoft.Web/sites/slots/read'
  // POST /providers/Microsoft.ResourceGraph/resources: the change poll's resourcechanges query
  // and the optional Resource Graph inventory. It grants no visibility by itself (Resource Graph
  // returns only what the actions above can read), but it submits the query, so it is declared
  // rather than relied on implicitly.
  'Microsoft.ResourceGraph/resources/read'
]

resource auditReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(managementGroup().id, roleName)
  properties: {
    roleName: roleName
    description: 'Read-only inventory of App Service sites and slots for the nightly client-certificate audit. No data actions, no configuration or secret reads.'
    type: 'CustomRole'
    permissions: [
      {
        actions: auditActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      managementGroup().id
    ]
  }
}

resource auditReaderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, auditReaderRole.id)
  properties: {
    roleDefinitionId: auditReaderRole.id
    principalId: principalId
    principalType: principalType
    description: 'Nightly client-certificate audit of every App Service and slot under this management group.'
  }
}

@description('Resource id of the custom role definition.')
output roleDefinitionId string = auditReaderRole.id

@description('The actions the custom role grants.')
output actions array = auditActions
