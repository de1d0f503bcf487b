// Stage two of the deployment: the Event Grid subscription that feeds the
// `segment_blob_created` blob trigger. Run by the azd postdeploy hook
// (infra/scripts/postdeploy.*) once the code is deployed, because Event Grid validates
// the webhook on creation and the `blobs_extension` system key exists only after the
// host has loaded the blob extension.
//
// The key is read here with listKeys, inside the deployment, so it never passes
// through a shell, a parameter file or an output. Nothing this template outputs
// contains the webhook URL.

@description('Function app name (azd output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Event Grid system topic on the storage account (azd output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('Storage account name (azd output AZURE_STORAGE_ACCOUNT_NAME).')
param storageAccountName string

@description('Container whose new blobs trigger a run.')
param inboxContainerName string = 'inbox'

@description('Container undeliverable events are written to.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Name of the blob-trigger function (the Python def name).')
param blobTriggerFunctionName string = 'segment_blob_created'

@description('Event subscription name.')
param subscriptionName string = 'segment-blob-created'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

var blobsExtensionKey = listKeys('${site.id}/host/default', '2024-04-01').systemKeys.blobs_extension
var webhookUrl = 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${blobTriggerFunctionName}&code=${blobsExtensionKey}'

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      // The trailing slash keeps `inbox-archive` and the like from matching.
      subjectBeginsWith: '/blobServices/default/containers/${inboxContainerName}/'
      isSubjectCaseSensitive: false
      // Only fully committed block blobs: without this filter one upload can fire
      // several events (e.g. an empty PutBlob followed by PutBlockList).
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output eventSubscriptionName string = blobCreated.name
