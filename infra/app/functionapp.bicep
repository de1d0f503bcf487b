// The ccexport function app on a Flex Consumption plan (FC1, Linux, Python).
// Every connection uses the user-assigned identity; no app setting holds a secret.
// The Constant Contact client secret and the OAuth tokens stay in Key Vault and are
// read (and the tokens rotated) by the app at run time.
//
// FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION and FUNCTIONS_WORKER_PROCESS_COUNT
// are deliberately absent from the app settings: Flex Consumption rejects or ignores
// them (runtime and scale live in functionAppConfig; one worker process per instance).

@description('Function app name; also its host name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for the plan.')
param tags object = {}

@description('Service name in azure.yaml; azd finds the app by this tag.')
param azdServiceName string

@description('Python version the app runs on.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Upper bound on instances; also bounds how many activities can call Constant Contact at once.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Threads of the Python worker. host.json durableTask concurrency is set to the same number.')
@minValue(1)
@maxValue(32)
param pythonThreadCount int = 8

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account name (host, task hub, app data, deployment package).')
param storageAccountName string

@description('Container the Flex plan deploys the app package from.')
param deploymentContainerName string

@description('Key Vault URI (https://<name>.vault.azure.net/).')
param keyVaultUri string

@description('Application Insights connection string (not a credential: local auth is off).')
param applicationInsightsConnectionString string

@description('Durable Functions task hub name.')
param taskHubName string

@description('Application (client) id of the Entra app registration that signs callers in (infra/scripts/preprovision).')
param authClientId string

@description('Constant Contact API key (the OAuth client id). Not a secret; the client secret is in Key Vault.')
param constantContactClientId string

@description('Constant Contact V3 API base URL.')
param constantContactApiBase string

@description('Constant Contact OAuth base URL.')
param constantContactAuthBase string

@description('NCRONTAB schedule of the scheduled export refresh.')
param exportSchedule string

@description('Days of Durable Functions history kept for ended runs; the daily purge timer deletes older ones (DURABLE_HISTORY_DAYS).')
@minValue(1)
param durableHistoryDays int = 30

param inboxContainerName string
param stagingContainerName string
param reportsContainerName string
param exportsContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is off: it is offered only in some regions, and a batch export that misses a zonal outage is retried by the next run.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Public network access is required: the Constant Contact OAuth redirect arrives from the operator's browser and Event Grid delivers blob events over the internet. The API needs function keys.
  // checkov:skip=CKV_AZURE_17: Client certificates would break the same browser redirect; callers authenticate with function keys over HTTPS.
  // checkov:skip=CKV_AZURE_212: No always-ready instances: the app scales to zero so it costs nothing when idle; runs are event- and schedule-driven and tolerate a cold start.
  // checkov:skip=CKV_AZURE_213: No health check: it takes failing instances out of an HTTP load-balanced pool, and this app has no standing pool (it scales to zero and its work is event- and queue-driven).
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': azdServiceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Names are the contract with the code (functions/, shared/). No value is a secret.
      appSettings: [
        // Functions host and Durable task hub (Azure Storage provider): blob, queue, table.
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Blob trigger and app data; the queue URI is where the trigger puts poison messages.
        {
          name: 'CCEXPORT_STORAGE__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'CCEXPORT_STORAGE__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'CCEXPORT_STORAGE__credential'
          value: 'managedidentity'
        }
        {
          name: 'CCEXPORT_STORAGE__clientId'
          value: identityClientId
        }
        {
          name: 'TASKHUB_NAME'
          value: taskHubName
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        // DefaultAzureCredential picks the user-assigned identity from this.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'CTCT_CLIENT_ID'
          value: constantContactClientId
        }
        {
          name: 'CTCT_API_BASE'
          value: constantContactApiBase
        }
        {
          name: 'CTCT_AUTH_BASE'
          value: constantContactAuthBase
        }
        {
          name: 'EXPORT_SCHEDULE'
          value: exportSchedule
        }
        {
          name: 'INBOX_CONTAINER'
          value: inboxContainerName
        }
        {
          name: 'STAGING_CONTAINER'
          value: stagingContainerName
        }
        {
          name: 'REPORTS_CONTAINER'
          value: reportsContainerName
        }
        {
          name: 'EXPORTS_CONTAINER'
          value: exportsContainerName
        }
        {
          name: 'DURABLE_HISTORY_DAYS'
          value: string(durableHistoryDays)
        }
        // The tenant whose signed-in users the app trusts: the one App Service
        // authentication's issuer names (authsettingsV2 below).
        {
          name: 'CCEXPORT_TENANT_ID'
          value: tenant().tenantId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // The worker configures the Azure Monitor OpenTelemetry distro and parents each
        // invocation on the host span, so the spans of the app join the one trace Durable
        // distributed tracing makes of each run. Only the Azure SDK is instrumented: the
        // Constant Contact calls have spans of their own, without URLs.
        {
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        {
          name: 'OTEL_PYTHON_DISABLED_INSTRUMENTATIONS'
          value: 'django,fastapi,flask,httpx,httpx2,psycopg2,requests,urllib,urllib3'
        }
        // Every span kept: the distro otherwise samples by rate and drops the first
        // spans of a quiet app, and a run is a few hundred spans a day at most.
        {
          name: 'OTEL_TRACES_SAMPLER'
          value: 'always_on'
        }
        // One worker process per Flex instance; this many threads run sync functions,
        // matching durableTask maxConcurrentActivityFunctions in host.json.
        {
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: string(pythonThreadCount)
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Deployments (azd, Core Tools) authenticate with Entra tokens; basic publishing
// credentials (FTP and SCM user/password) are turned off.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// App Service authentication: every request needs a Microsoft Entra token issued for
// this app's registration, or it is answered 401 before it reaches the app. The app
// reads the caller and their roles (admin, contributor) from the principal headers
// the platform sets. Two paths are let through: the Constant Contact OAuth callback,
// where the admin's browser returns from Constant Contact (its single-use state
// admits it), and the blob extension's Event Grid endpoint (Event Grid carries the
// extension's system key). No token store: callers send a bearer token each time.
var authExcludedPaths = [
  '/api/oauth/callback'
  '/runtime/webhooks/blobs'
]

resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config resource as the site's `web` configuration; this one is the authentication configuration, so the site-configuration checks below do not apply to it (they are kept, or skipped with their reasons, on the site itself).
  // checkov:skip=CKV_AZURE_13: This resource is the App Service authentication (authsettingsV2, required, Return401); the check looks for the retired v1 `siteAuthEnabled` flag.
  // checkov:skip=CKV_AZURE_63: HTTP logging is a setting of the site's `web` configuration, not of its authentication settings.
  // checkov:skip=CKV_AZURE_65: Detailed error messages are a setting of the site's `web` configuration, not of its authentication settings.
  // checkov:skip=CKV_AZURE_66: Failed request tracing is a setting of the site's `web` configuration, not of its authentication settings.
  // checkov:skip=CKV_AZURE_80: .NET Framework version does not apply: the app runs Python, and this resource is its authentication settings.
  // checkov:skip=CKV_AZURE_88: Azure Files does not apply to authentication settings (the Flex plan deploys from blob storage).
  // checkov:skip=CKV_AZURE_222: Public network access is required (see the site): sign-in is what keeps callers out.
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: authExcludedPaths
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
