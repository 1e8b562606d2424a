// aml-dsr: everything `azd up` (or `az deployment sub create`) deploys. Runbook: docs/operations.md.
//
//   resource group
//   ├── Flex Consumption plan (FC1) + function app (Python 3.11, system-assigned identity)
//   ├── Service Bus namespace (Standard, Entra ID only): request queue, outcome queue
//   ├── data storage account: exports (deleted after exportRetentionDays), state, audit (immutable)
//   ├── host storage account: AzureWebJobsStorage + deployment package
//   ├── Log Analytics + Application Insights (Entra ID ingestion only)
//   └── role assignments of the app's identity, each at the narrowest scope
//   subscription (optional): the Azure ML custom roles, their assignment, Reader for discovery
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption).')
param location string

@description('Resource group to create or update; default rg-<environmentName>.')
param resourceGroupName string = ''

// --- Service Bus -----------------------------------------------------------------------------------------

param requestQueueName string = 'dsr-requests'
param outcomeQueueName string = 'dsr-outcomes'

@description('maxDeliveryCount of the queues; also DSR_MAX_DELIVERY_COUNT, so the last delivery publishes `failed` before the message is dead-lettered.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Duplicate detection window of both queues (ISO 8601, at most P7D). One day covers a partial dead-letter replay re-run the next morning.')
param duplicateDetectionWindow string = 'P1D'

@description('Message time to live (ISO 8601); an expired request is dead-lettered, never silently dropped.')
param messageTimeToLive string = 'P14D'

@description('Grant Azure Service Bus Data Owner on the request queue (only) for precise scaling; see docs/operations.md.')
param serviceBusOwnerForScaling bool = false

// --- Storage ---------------------------------------------------------------------------------------------

param exportContainerName string = 'dsr-exports'
param stateContainerName string = 'dsr-state'
param auditContainerName string = 'dsr-audit'

@description('Days an export bundle is kept before the lifecycle policy deletes it.')
@minValue(1)
param exportRetentionDays int = 30

@description('Days each audit blob is immutable (appends allowed). 3 years: see docs/operations.md before changing.')
@minValue(1)
@maxValue(146000)
param auditRetentionDays int = 1095

@description('Set to true after locking the audit retention (docs/operations.md 2.3); a locked policy cannot be redeployed.')
param auditRetentionLocked bool = false

@description('Soft-delete window of the data account (days); deleted exports stay restorable, and so exist, this much longer.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the data account. ZRS keeps the audit trail through a zone outage without copying personal data to another region.')
param dataStorageSku string = 'Standard_ZRS'

// --- Function app ----------------------------------------------------------------------------------------

@description('Most instances the app scales to. ARM throttles per identity and subscription, so more instances do not export faster.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// --- App settings (contract section 4 and 6; defaults as in shared/settings.py) ---------------------------

@description('How long a worker\'s claim on a request lasts unrenewed (DSR_LEASE_SECONDS); also the request queue lockDuration, so must be 5-300.')
@minValue(5)
@maxValue(300)
param leaseSeconds int = 60

param armEndpoint string = 'https://management.azure.com'
param modelManagementEndpoint string = 'https://{location}.modelmanagement.azureml.net'
param experimentsEndpoint string = 'https://{location}.experiments.azureml.net'
param aetherEndpoint string = 'https://{location}.aether.ms'
param tokenScope string = 'https://management.core.windows.net/.default'

@description('Azure Resource Graph base URL (DSR_RESOURCEGRAPH_ENDPOINT); empty means the ARM endpoint.')
param resourceGraphEndpoint string = ''

@description('api-version of the Azure ML ARM (v2) calls.')
param armMlApiVersion string = '2024-10-01'

@description('Validity of a download link (user delegation SAS), hours.')
@minValue(1)
@maxValue(168)
param downloadHours int = 168

@description('Optional: also publish each outcome to this Event Grid topic endpoint (the identity then needs EventGrid Data Sender on it).')
param eventGridTopicEndpoint string = ''

param concurrency int = 16

@description('Workspaces of one request in flight per instance (DSR_WORKSPACE_CONCURRENCY): fan-out children and dsr process.')
@minValue(1)
param workspaceConcurrency int = 8
param connectTimeoutSeconds int = 10
param readTimeoutSeconds int = 60
param maxAttempts int = 8
param maxRetryAfterSeconds int = 120
@description('Largest response body read (a page or an item), bytes; a larger one is response_too_large.')
param maxResponseBytes int = 67108864
@description('Overall time to read one response, on top of the per-read timeout; then response_too_slow.')
param responseDeadlineSeconds int = 300
param lroDeadlineSeconds int = 1800
param timeBudgetSeconds int = 420
param checkpointSeconds int = 5
param watchdogIdleSeconds int = 300
param watchdogMaxRequeues int = 3

@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

// --- Azure ML access (subscription level; needs Owner or User Access Administrator) -----------------------

@description('Create the aml-dsr custom roles in this subscription (infra/roles/*.json).')
param deployAmlRoles bool = false

@description('With deployAmlRoles: assign the operator role at this whole subscription.')
param amlRoleAtSubscription bool = false

@description('With deployAmlRoles: ARM ids of workspaces (in this subscription) to assign the operator role on.')
param amlWorkspaceIds array = []

@description('Subscriptions whose Azure ML workspaces requests may discover: Reader for the app\'s identity at each.')
param discoverySubscriptionIds array = []

var abbreviation = 'dsr'
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'aml-dsr'
}
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-${abbreviation}-${resourceToken}'
    applicationInsightsName: 'appi-${abbreviation}-${resourceToken}'
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    location: location
    tags: tags
    namespaceName: 'sb-${abbreviation}-${resourceToken}'
    requestQueueName: requestQueueName
    outcomeQueueName: outcomeQueueName
    maxDeliveryCount: maxDeliveryCount
    requestLockDuration: 'PT${leaseSeconds}S'
    duplicateDetectionWindow: duplicateDetectionWindow
    messageTimeToLive: messageTimeToLive
  }
}

module dataStorage 'modules/storage-data.bicep' = {
  name: 'storage-data'
  scope: rg
  params: {
    location: location
    tags: tags
    accountName: 'st${abbreviation}${resourceToken}'
    exportContainerName: exportContainerName
    stateContainerName: stateContainerName
    auditContainerName: auditContainerName
    skuName: dataStorageSku
    exportRetentionDays: exportRetentionDays
    auditRetentionDays: auditRetentionDays
    auditRetentionLocked: auditRetentionLocked
    softDeleteDays: softDeleteDays
  }
}

module hostStorage 'modules/storage-host.bicep' = {
  name: 'storage-host'
  scope: rg
  params: {
    location: location
    tags: tags
    accountName: 'stfn${resourceToken}'
    deploymentContainerName: deploymentContainerName
  }
}

// The app settings, one per line as `NAME: value` (tests/infra/test_settings_match.py reads this block and
// compares it with the settings the code reads; keep the two comment markers).
// app-settings:begin
var appSettings = {
  AzureWebJobsStorage__accountName: hostStorage.outputs.accountName
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  ServiceBusConnection__fullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
  DSR_REQUEST_QUEUE: serviceBus.outputs.requestQueueName
  DSR_OUTCOME_QUEUE: serviceBus.outputs.outcomeQueueName
  DSR_MAX_DELIVERY_COUNT: string(maxDeliveryCount)
  DSR_EVENTGRID_TOPIC_ENDPOINT: eventGridTopicEndpoint
  DSR_STORAGE__blobServiceUri: dataStorage.outputs.blobEndpoint
  DSR_EXPORT_CONTAINER: dataStorage.outputs.exportContainerName
  DSR_STATE_CONTAINER: dataStorage.outputs.stateContainerName
  DSR_AUDIT_CONTAINER: dataStorage.outputs.auditContainerName
  DSR_DOWNLOAD_HOURS: string(downloadHours)
  DSR_ARM_ENDPOINT: armEndpoint
  DSR_ARM_ML_API_VERSION: armMlApiVersion
  DSR_RESOURCEGRAPH_ENDPOINT: !empty(resourceGraphEndpoint) ? resourceGraphEndpoint : armEndpoint
  DSR_MODELMANAGEMENT_ENDPOINT: modelManagementEndpoint
  DSR_EXPERIMENTS_ENDPOINT: experimentsEndpoint
  DSR_AETHER_ENDPOINT: aetherEndpoint
  DSR_TOKEN_SCOPE: tokenScope
  DSR_AUTH: 'managed-identity'
  DSR_LEASE_SECONDS: string(leaseSeconds)
  DSR_CONCURRENCY: string(concurrency)
  DSR_WORKSPACE_CONCURRENCY: string(workspaceConcurrency)
  DSR_CONNECT_TIMEOUT_SECONDS: string(connectTimeoutSeconds)
  DSR_READ_TIMEOUT_SECONDS: string(readTimeoutSeconds)
  DSR_MAX_ATTEMPTS: string(maxAttempts)
  DSR_MAX_RETRY_AFTER_SECONDS: string(maxRetryAfterSeconds)
  DSR_MAX_RESPONSE_BYTES: string(maxResponseBytes)
  DSR_RESPONSE_DEADLINE_SECONDS: string(responseDeadlineSeconds)
  DSR_LRO_DEADLINE_SECONDS: string(lroDeadlineSeconds)
  DSR_TIME_BUDGET_SECONDS: string(timeBudgetSeconds)
  DSR_CHECKPOINT_SECONDS: string(checkpointSeconds)
  DSR_WATCHDOG_IDLE_SECONDS: string(watchdogIdleSeconds)
  DSR_WATCHDOG_MAX_REQUEUES: string(watchdogMaxRequeues)
  DSR_LOG_LEVEL: logLevel
}
// app-settings:end

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    tags: tags
    planName: 'plan-${abbreviation}-${resourceToken}'
    appName: 'func-${abbreviation}-${resourceToken}'
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: appSettings
  }
}

module appRoles 'modules/app-roles.bicep' = {
  name: 'app-roles'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    serviceBusNamespaceName: serviceBus.outputs.namespaceName
    requestQueueName: serviceBus.outputs.requestQueueName
    outcomeQueueName: serviceBus.outputs.outcomeQueueName
    dataAccountName: dataStorage.outputs.accountName
    exportContainerName: dataStorage.outputs.exportContainerName
    stateContainerName: dataStorage.outputs.stateContainerName
    auditContainerName: dataStorage.outputs.auditContainerName
    hostAccountName: hostStorage.outputs.accountName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    serviceBusOwnerForScaling: serviceBusOwnerForScaling
  }
}

module amlRoles 'modules/aml-role.bicep' = if (deployAmlRoles) {
  name: 'aml-roles'
  params: {
    principalId: functionApp.outputs.principalId
    assignAtSubscription: amlRoleAtSubscription
    workspaceIds: amlWorkspaceIds
  }
}

module discoveryReader 'modules/discovery-reader.bicep' = [for subscriptionId in discoverySubscriptionIds: {
  name: 'dsr-discovery-${uniqueString(subscriptionId)}'
  scope: subscription(subscriptionId)
  params: {
    principalId: functionApp.outputs.principalId
  }
}]

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output SERVICEBUS_NAMESPACE string = serviceBus.outputs.namespaceName
output SERVICEBUS_FULLY_QUALIFIED_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output DSR_REQUEST_QUEUE string = serviceBus.outputs.requestQueueName
output DSR_OUTCOME_QUEUE string = serviceBus.outputs.outcomeQueueName
output DATA_STORAGE_ACCOUNT string = dataStorage.outputs.accountName
output DSR_STORAGE_BLOB_SERVICE_URI string = dataStorage.outputs.blobEndpoint
output HOST_STORAGE_ACCOUNT string = hostStorage.outputs.accountName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
