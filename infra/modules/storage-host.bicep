// The Functions host's storage account: AzureWebJobsStorage (timer schedule monitor, singleton leases, function
// keys) and the Flex Consumption deployment package container. Entra ID only. It holds no personal data.

param location string
param tags object
param accountName string
param deploymentContainerName string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: no VNet in this template: the Flex Consumption app reaches storage over its public endpoint; every request needs an Entra ID token (shared key is off). Private endpoints: docs/operations.md, hardening
  //checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous access is off (allowBlobPublicAccess false, containers private)
  //checkov:skip=CKV_AZURE_43: the name is computed ('st' + prefix + uniqueString(), 17-18 lowercase alphanumerics), which checkov cannot evaluate
  //checkov:skip=CKV_AZURE_206: holds only what is recreated by a redeploy (deployment package, host keys, timer state); no personal data
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output accountName string = account.name
output accountId string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
