// The data storage account: export bundles, request state and the audit trail (personal data and the proof of
// what was done with it). Entra ID only (no shared key, so no account-key SAS either: download links are user
// delegation SAS), private containers, exports deleted after exportRetentionDays, the audit trail immutable.
//
// The Functions host's own storage (AzureWebJobsStorage, the deployment package) is a separate account
// (storage-host.bicep): the host needs Storage Blob Data Owner on its whole account, and that must not reach
// the bundles. Here the app's identity holds Storage Blob Data Contributor on each of the three containers only.

param location string
param tags object
param accountName string
param exportContainerName string
param stateContainerName string
param auditContainerName string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string

@description('Days after which an export bundle blob is deleted by the lifecycle policy.')
@minValue(1)
param exportRetentionDays int

@description('Days during which an audit blob cannot be deleted or overwritten (appends stay allowed).')
@minValue(1)
@maxValue(146000)
param auditRetentionDays int

@description('True once the audit retention policy has been locked (docs/operations.md 2.3): a locked policy can no longer be put, only extended, so the template then leaves it alone.')
param auditRetentionLocked bool

@description('Days a deleted blob or container can be restored (soft delete). Personal data lives this much longer.')
@minValue(1)
@maxValue(365)
param softDeleteDays int

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: no VNet in this template: the Flex Consumption app reaches storage over its public endpoint; every request needs an Entra ID token (shared key is off). Private endpoints: docs/operations.md, hardening
  //checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous access is off (allowBlobPublicAccess false, containers private)
  //checkov:skip=CKV_AZURE_43: the name is computed ('st' + prefix + uniqueString(), 17-18 lowercase alphanumerics), which checkov cannot evaluate
  //checkov:skip=CKV_AZURE_206: replication is the skuName parameter (default ZRS): geo-replication copies personal data to the paired region, so choose GZRS only where that region is in the same jurisdiction
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
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
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource exportContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: exportContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: auditContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Time-based retention (WORM) on the audit trail. The app writes one append blob per request and only ever
// appends (shared/adapters/blob.py BlobAuditLog), hence allowProtectedAppendWrites. Deployed unlocked: an
// unlocked policy can still be shortened or removed, a locked one cannot, and locking is a separate, deliberate
// step (docs/operations.md, "Lock the audit retention").
resource auditRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!auditRetentionLocked) {
  parent: auditContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: true
  }
}

// Bundles are a copy of personal data handed to the privacy office: delete them once that hand-over is done.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-exports'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
                'appendBlob'
              ]
              prefixMatch: [
                '${exportContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: exportRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

output accountName string = account.name
output accountId string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output exportContainerName string = exportContainer.name
output stateContainerName string = stateContainer.name
output auditContainerName string = auditContainer.name
