// One StorageV2 account holds everything the app keeps: the Functions host state and
// the Durable Functions task hub (blob, queue, table), the deployment package, the
// Customer Insights inbox and the app's own containers. Identity-based access only:
// shared keys are off, so no connection string with a key exists anywhere.

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object = {}

@description('Replication. LRS is enough for this app: Customer Insights can export again and staging is transient; choose a GRS/ZRS SKU for more durability.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Container Customer Insights writes segment exports to.')
param inboxContainerName string

@description('Container for prepared chunk payloads.')
param stagingContainerName string

@description('Container for run reports and rejects files (they contain e-mail addresses).')
param reportsContainerName string

@description('Container for export definitions, connection metadata and run state.')
param exportsContainerName string

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Container Event Grid writes undeliverable blob events to.')
param deadLetterContainerName string

@description('Days after which leftover staging blobs (from runs that never finished) are deleted.')
@minValue(1)
param stagingRetentionDays int = 7

@description('Days after which dead-lettered Event Grid events are deleted.')
@minValue(1)
param deadLetterRetentionDays int = 30

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Default network action stays Allow. Customer Insights (a SaaS service) and a Flex Consumption app without VNet integration have no fixed addresses to allow, and every request still needs an Entra token (shared keys are off).
  // checkov:skip=CKV_AZURE_59: Public endpoint kept for the same reason; private endpoints need VNet integration, which this deployment leaves out to stay at about zero cost when idle.
  // checkov:skip=CKV_AZURE_206: LRS by default (parameter storageSkuName): inbox files can be exported again from Customer Insights, staging is transient, and geo-replicated transactions cost more on a transaction-heavy Durable task hub.
  name: name
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
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // Blob soft delete stays off: Customer Insights exports fail when it is on.
    deleteRetentionPolicy: {
      enabled: false
    }
    // Deleted containers can be restored for a week.
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

var containerNames = [
  inboxContainerName
  stagingContainerName
  reportsContainerName
  exportsContainerName
  deploymentContainerName
  deadLetterContainerName
]

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

// Staging blobs are deleted by the run that wrote them; this only sweeps what a failed
// run left behind. Dead-lettered events are kept long enough to investigate.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-staging'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${stagingContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: stagingRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'expire-dead-letters'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${deadLetterContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
