// The Azure ML custom roles (infra/roles/*.json, the same files `az role definition create` takes) defined in
// this subscription, and the operator role assigned to the app's identity at the subscription and/or on
// individual workspaces. For a resource group or a management group scope see docs/operations.md.
targetScope = 'subscription'

param principalId string

@description('Assign the operator role at this subscription (every workspace in it).')
param assignAtSubscription bool

@description('ARM ids of workspaces in this subscription to assign the operator role on, one by one.')
param workspaceIds array

var operator = loadJsonContent('../roles/aml-dsr-operator.json')
var purge = loadJsonContent('../roles/aml-dsr-purge.json')

resource operatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'aml-dsr-operator')
  properties: {
    roleName: operator.Name
    description: operator.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: operator.Actions
        notActions: operator.NotActions
        dataActions: operator.DataActions
        notDataActions: operator.NotDataActions
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

// Defined, never assigned here: a purge right is granted per workspace, per purge (docs/operations.md).
resource purgeRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'aml-dsr-purge')
  properties: {
    roleName: purge.Name
    description: purge.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: purge.Actions
        notActions: purge.NotActions
        dataActions: purge.DataActions
        notDataActions: purge.NotDataActions
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource atSubscription 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignAtSubscription) {
  name: guid(subscription().id, principalId, operatorRole.id)
  properties: {
    roleDefinitionId: operatorRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: export and delete personal data in every Azure ML workspace of this subscription'
  }
}

module onWorkspace 'aml-role-workspace.bicep' = [for id in workspaceIds: {
  name: 'aml-dsr-operator-${uniqueString(id)}'
  scope: resourceGroup(split(id, '/')[4])
  params: {
    workspaceName: last(split(id, '/'))
    principalId: principalId
    roleDefinitionId: operatorRole.id
  }
}]

output operatorRoleDefinitionId string = operatorRole.id
output purgeRoleDefinitionId string = purgeRole.id
