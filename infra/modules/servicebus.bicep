// Service Bus namespace (Standard, Entra ID only) with the request queue and the outcome queue.

param location string
param tags object
param namespaceName string
param requestQueueName string
param outcomeQueueName string

@description('maxDeliveryCount of both queues; the app reads the same number from DSR_MAX_DELIVERY_COUNT.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int

@description('Peek-lock duration of the request queue, ISO 8601 (5 seconds to 5 minutes); main.bicep derives it from DSR_LEASE_SECONDS.')
param requestLockDuration string

@description('Duplicate detection window, ISO 8601 (20 seconds to 7 days).')
param duplicateDetectionWindow string

@description('Time to live of a message, ISO 8601; an expired message is dead-lettered, never dropped.')
param messageTimeToLive string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// Requests: the Functions trigger settles them; message ids are deterministic (<requestId>, <requestId>:cont:<n>,
// <requestId>:requeue:<n>, <id>:replay:<n>), so duplicate detection drops what Event Grid or a re-run replay resends.
resource requestQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: requestQueueName
  properties: {
    lockDuration: requestLockDuration
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: messageTimeToLive
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// Outcomes: CloudEvents whose id is <requestId>:<status>; a republished outcome (redelivered finished request) is a duplicate.
resource outcomeQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: outcomeQueueName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: messageTimeToLive
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

output namespaceName string = namespace.name
// serviceBusEndpoint is https://<name>.servicebus.windows.net:443/ (another suffix in sovereign clouds).
output fullyQualifiedNamespace string = split(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':')[0]
output requestQueueName string = requestQueue.name
output outcomeQueueName string = outcomeQueue.name
