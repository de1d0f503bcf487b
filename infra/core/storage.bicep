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

@description('Container for run reports and rejects files (they contain e-mail addresses), and the snapshots of the exports (`_state/`).')
param reportsContainerName string

@description('Container for export definitions, connection metadata, run records and locks.')
param exportsContainerName string

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Container Event Grid writes undeliverable blob events to.')
param deadLetterContainerName string

@description('Days after which a Customer Insights export in the inbox is deleted (by its last change). A run needs its folder until it has run; a resumed run (after the daily quota, after a confirmation or a fix) reads it again, so keep it longer than it takes a person to act. The inbox holds whole segments with e-mail addresses: the largest store of personal data here.')
@minValue(1)
param inboxRetentionDays int = 14

@description('Days after which staged request bodies are deleted. A run deletes the bodies it delivered; the others stay for resuming the same run, so this bounds how long a run can be resumed without preparing it again.')
@minValue(1)
param stagingRetentionDays int = 14

@description('Days after which run reports and rejects files (rejects.csv holds e-mail addresses) are deleted, and the run records the console lists runs by. The snapshots of the exports, in the reports container under `_state/`, are never deleted: incremental and mirror runs need them.')
@minValue(1)
param reportsRetentionDays int = 90

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

// What the account keeps, and for how long (README: "What is kept, where, for how
// long"). Ages count from a blob's last change; the platform applies the policy about
// once a day, so a blob may outlive its age by a day or two.
//
// The reports container also holds every export's snapshot (`_state/<key>.bin`,
// shared/exports/state.py), which incremental and mirror runs need and which must never
// expire. Lifecycle filters have no "except", so the reports rules list the first
// characters a run id may start with (shared/runs/ids.py: a lower-case letter or a
// digit), in groups (a rule takes at most ten prefixes): none matches `_state/`.
var reportPrefixes = [
  [
    '${reportsContainerName}/0'
    '${reportsContainerName}/1'
    '${reportsContainerName}/2'
    '${reportsContainerName}/3'
    '${reportsContainerName}/4'
    '${reportsContainerName}/5'
    '${reportsContainerName}/6'
    '${reportsContainerName}/7'
    '${reportsContainerName}/8'
    '${reportsContainerName}/9'
  ]
  [
    '${reportsContainerName}/a'
    '${reportsContainerName}/b'
    '${reportsContainerName}/c'
    '${reportsContainerName}/d'
    '${reportsContainerName}/e'
    '${reportsContainerName}/f'
    '${reportsContainerName}/g'
    '${reportsContainerName}/h'
    '${reportsContainerName}/i'
    '${reportsContainerName}/j'
  ]
  [
    '${reportsContainerName}/k'
    '${reportsContainerName}/l'
    '${reportsContainerName}/m'
    '${reportsContainerName}/n'
    '${reportsContainerName}/o'
    '${reportsContainerName}/p'
    '${reportsContainerName}/q'
    '${reportsContainerName}/r'
    '${reportsContainerName}/s'
    '${reportsContainerName}/t'
  ]
  [
    '${reportsContainerName}/u'
    '${reportsContainerName}/v'
    '${reportsContainerName}/w'
    '${reportsContainerName}/x'
    '${reportsContainerName}/y'
    '${reportsContainerName}/z'
  ]
]

var reportRules = [
  for (prefixes, i) in reportPrefixes: {
    name: 'expire-reports-${i}'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: prefixes
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: reportsRetentionDays
          }
        }
      }
    }
  }
]

var otherRules = [
  // Customer Insights' exports: whole segments, kept only as long as a run may need them.
  {
    name: 'expire-inbox'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${inboxContainerName}/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: inboxRetentionDays
          }
        }
      }
    }
  }
  // Request bodies a run did not deliver stay for resuming it; this sweeps them, and
  // what a broken run left behind.
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
  // The record of each run start (shared/runs/index.py: `runs/<export>/...` in the
  // exports container, no contact data) goes with its report. Definitions,
  // connections and locks, beside it, are never expired.
  {
    name: 'expire-run-records'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${exportsContainerName}/runs/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: reportsRetentionDays
          }
        }
      }
    }
  }
  // Dead-lettered events are kept long enough to investigate.
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

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: concat(otherRules, reportRules)
    }
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
