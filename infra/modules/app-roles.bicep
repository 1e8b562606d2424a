// Role assignments of the function app's identity inside the resource group, each at the narrowest scope:
// a queue, a container, the host account, the App Insights component.

param principalId string
param serviceBusNamespaceName string
param requestQueueName string
param outcomeQueueName string
param dataAccountName string
param exportContainerName string
param stateContainerName string
param auditContainerName string
param hostAccountName string
param applicationInsightsName string

@description('Also grant Azure Service Bus Data Owner on the request queue (only there), so the scale controller can read the queue length. Without it scaling still works on Receiver rights, less precisely.')
param serviceBusOwnerForScaling bool

// Built-in role definition ids (the same in every tenant).
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource requestQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = {
  parent: namespace
  name: requestQueueName
}

resource outcomeQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = {
  parent: namespace
  name: outcomeQueueName
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: dataAccount
  name: 'default'
}

resource exportContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: exportContainerName
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: stateContainerName
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: auditContainerName
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Service Bus. Receiver on the request queue covers its dead-letter sub-queue ($DeadLetterQueue) as well.
resource requestReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: requestQueue
  name: guid(requestQueue.id, principalId, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: receive requests (trigger)'
  }
}

// Continuations (<requestId>:cont:<n>), watchdog re-enqueues, fan-out and dead-letter replays go back on the request queue.
resource requestSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: requestQueue
  name: guid(requestQueue.id, principalId, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: continuations, re-enqueues, replays'
  }
}

resource requestOwnerForScaling 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (serviceBusOwnerForScaling) {
  scope: requestQueue
  name: guid(requestQueue.id, principalId, roles.serviceBusDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: queue length for the scale controller'
  }
}

resource outcomeSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: outcomeQueue
  name: guid(outcomeQueue.id, principalId, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: publish outcomes'
  }
}

// Data storage: one assignment per container, none on the account.
resource exportWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportContainer
  name: guid(exportContainer.id, principalId, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: export bundles'
  }
}

resource stateWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stateContainer
  name: guid(stateContainer.id, principalId, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: request state and leases'
  }
}

resource auditWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: auditContainer
  name: guid(auditContainer.id, principalId, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: audit trail (append only; the container is immutable)'
  }
}

// Get User Delegation Key is an account-level operation (blobServices/generateUserDelegationKey/action): the
// Delegator role grants only that, no data access. The SAS it signs can grant no more than the identity's own
// rights on the export container.
resource delegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: dataAccount
  name: guid(dataAccount.id, principalId, roles.storageBlobDelegator)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDelegator)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: user delegation key for download links'
  }
}

// Host storage: AzureWebJobsStorage with an identity needs Storage Blob Data Owner; the Flex Consumption
// deployment container (SystemAssignedIdentity) is in the same account and covered by it.
resource hostOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostAccount
  name: guid(hostAccount.id, principalId, roles.storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: Functions host storage and deployment package'
  }
}

resource telemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'aml-dsr: Entra ID telemetry ingestion'
  }
}
