// Reader at one subscription, for tenant-wide discovery with Azure Resource Graph (a request's
// "discover": {"subscriptions": [...]}): Resource Graph returns only what the caller may read.
// For "discover": {"managementGroups": [...]} assign Reader at the management group instead (docs/operations.md).
targetScope = 'subscription'

param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: find Azure ML workspaces with Resource Graph'
  }
}
