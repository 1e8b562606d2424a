// One role assignment on one Azure ML workspace (called by aml-role.bicep).

param workspaceName string
param principalId string
param roleDefinitionId string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: export and delete personal data in this workspace'
  }
}
