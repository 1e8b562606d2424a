// Flex Consumption plan (FC1) + Linux function app, Python 3.11, system-assigned identity.
// HTTPS only, TLS 1.2, no FTP, no basic (publishing profile) credentials: deployments go through Entra ID
// (azd deploy / func azure functionapp publish use the one-deploy API with a bearer token).

param location string
param tags object
param planName string
param appName string

@description('Blob endpoint of the host storage account (storage-host.bicep).')
param hostBlobEndpoint string
param deploymentContainerName string

@description('Upper bound of instances the platform scales to; each instance runs host.json maxConcurrentCalls requests.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('App settings (name: value); main.bicep builds them. They replace every app setting of the site.')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; requests are queued, checkpointed and due in days, so a zone outage delays them and loses nothing
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222: the status and cancel HTTP API (function key) must be reachable by the privacy office's tools; restrict with access restrictions or a private endpoint where a VNet exists (docs/operations.md)
  //checkov:skip=CKV_AZURE_17: callers authenticate with a function key (contract 6.4); requiring client certificates would break them
  //checkov:skip=CKV_AZURE_212: not applicable to Flex Consumption: no fixed instance pool, instances come per trigger
  //checkov:skip=CKV_AZURE_213: health check takes an instance out of HTTP load balancing; this app's work is queue-driven (a failed invocation is redelivered) and its HTTP API is a status read. Flex Consumption support for it not verified here
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostBlobEndpoint}${deploymentContainerName}'
          authentication: {
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
        version: '3.11'
      }
    }
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
