// ccexport on Azure: everything `azd up` provisions. One resource group holding a
// user-assigned identity, one storage account, Key Vault, Application Insights with
// Log Analytics, a Flex Consumption Python function app, the Event Grid system topic
// for blob events, and the role assignments that tie them together.
//
// Stage two (the Event Grid subscription to the blob trigger) is infra/eventgrid.bicep,
// deployed by the azd postdeploy hook after the code is up.
//
// Only raw resources and local modules: everything here can be parsed and checked offline.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; part of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region for all resources (one that offers Flex Consumption).')
param location string

@description('Object id of the user or pipeline running azd (AZURE_PRINCIPAL_ID); gets Key Vault Secrets Officer and Storage Blob Data Contributor so it can store the client secret and read reports. Empty to grant nothing.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Application (client) id of the Microsoft Entra app registration that signs callers in; infra/scripts/preprovision creates it and keeps it as AUTH_CLIENT_ID.')
@minLength(36)
param authClientId string

@description('Constant Contact API key (OAuth client id). Not a secret. The client secret goes into Key Vault as `ctct-client-secret` after deployment.')
param constantContactClientId string = ''

@description('Constant Contact V3 API base URL.')
param constantContactApiBase string = 'https://api.cc.email/v3'

@description('Constant Contact OAuth base URL.')
param constantContactAuthBase string = 'https://authz.constantcontact.com/oauth2/default/v1'

@description('NCRONTAB schedule (UTC) of the scheduled refresh of every enabled export.')
param exportSchedule string = '0 0 3 * * *'

@description('Python version of the app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Maximum Flex Consumption instances.')
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

@description('Python worker threads per instance (matches durableTask concurrency in host.json).')
@minValue(1)
@maxValue(32)
param pythonThreadCount int = 8

@description('Durable Functions task hub name (letters and digits, starting with a letter).')
@minLength(3)
@maxLength(45)
param taskHubName string = 'ccexport'

@description('Key Vault purge protection (irreversible). Turn on for production.')
param enableKeyVaultPurgeProtection bool = false

@description('Storage replication SKU.')
param storageSkuName string = 'Standard_LRS'

@description('Object id of the Customer Insights service principal that writes exports to the inbox container. Empty to grant nothing (assign it later).')
param customerInsightsPrincipalId string = ''

@description('Resource group name; defaults to rg-<environmentName>.')
param resourceGroupName string = ''

// --- alerts (core/alerts.bicep) and retention (core/storage.bicep, the purge timer) ---

@description('Where alerts are e-mailed (ALERT_EMAIL). Empty: the alert rules exist and fire, seen in the portal only, until an address is set.')
param alertEmail string = ''

@description('A run alerts when more than this percentage of its rows is rejected (REJECT_ALERT_PERCENT).')
@minValue(0)
@maxValue(100)
param rejectAlertPercent int = 5

@description('Per-export overrides of rejectAlertPercent, as JSON: {"<export>": <percent>} (REJECT_ALERT_PERCENT_BY_EXPORT). Empty for none.')
param rejectAlertPercentByExport string = ''

@description('Hours a mirror run may wait for its removals to be confirmed before it alerts (CONFIRMATION_ALERT_HOURS).')
@minValue(1)
@maxValue(36)
param confirmationAlertHours int = 24

@description('Days the inbox keeps a Customer Insights export (INBOX_RETENTION_DAYS).')
@minValue(1)
param inboxRetentionDays int = 14

@description('Days staged request bodies are kept for resuming a run (STAGING_RETENTION_DAYS).')
@minValue(1)
param stagingRetentionDays int = 14

@description('Days run reports and rejects files are kept (REPORTS_RETENTION_DAYS).')
@minValue(1)
param reportsRetentionDays int = 90

@description('Days of Durable Functions history kept for ended runs (DURABLE_HISTORY_DAYS). Never less than inboxRetentionDays + 2: a run is known as done by its history, so a folder still in the inbox must keep its run\'s history, or the schedule would start it again.')
@minValue(1)
param durableHistoryDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
// The lifecycle policy applies about once a day: a folder may outlive its age by up to two.
var durableHistoryKept = max(durableHistoryDays, inboxRetentionDays + 2)
var tags = {
  'azd-env-name': environmentName
  application: 'ccexport'
}

// Container names are the contract with the app (INBOX_CONTAINER etc.).
var containers = {
  inbox: 'inbox'
  staging: 'staging'
  reports: 'reports'
  exports: 'exports'
  deployment: 'app-package'
  deadLetter: 'eventgrid-deadletter'
}

var names = {
  resourceGroup: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  identity: 'id-ccexport-${resourceToken}'
  storage: 'stccx${resourceToken}'
  keyVault: 'kv-ccx-${resourceToken}'
  logAnalytics: 'log-ccexport-${resourceToken}'
  applicationInsights: 'appi-ccexport-${resourceToken}'
  plan: 'plan-ccexport-${resourceToken}'
  functionApp: 'func-ccexport-${resourceToken}'
  systemTopic: 'evgt-ccexport-${resourceToken}'
}

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSkuName
    inboxContainerName: containers.inbox
    stagingContainerName: containers.staging
    reportsContainerName: containers.reports
    exportsContainerName: containers.exports
    deploymentContainerName: containers.deployment
    deadLetterContainerName: containers.deadLetter
    inboxRetentionDays: inboxRetentionDays
    stagingRetentionDays: stagingRetentionDays
    reportsRetentionDays: reportsRetentionDays
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: tags
    enablePurgeProtection: enableKeyVaultPurgeProtection
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: tags
  }
}

module rbac 'core/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    inboxContainerName: containers.inbox
    customerInsightsPrincipalId: customerInsightsPrincipalId
  }
}

module functionApp 'app/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    azdServiceName: 'api'
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    pythonThreadCount: pythonThreadCount
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: containers.deployment
    keyVaultUri: keyVault.outputs.uri
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    taskHubName: taskHubName
    authClientId: authClientId
    constantContactClientId: constantContactClientId
    constantContactApiBase: constantContactApiBase
    constantContactAuthBase: constantContactAuthBase
    exportSchedule: exportSchedule
    inboxContainerName: containers.inbox
    stagingContainerName: containers.staging
    reportsContainerName: containers.reports
    exportsContainerName: containers.exports
    durableHistoryDays: durableHistoryKept
  }
  // The host must be able to reach its storage the first time it starts.
  dependsOn: [
    rbac
  ]
}

module blobEvents 'app/blob-events.bicep' = {
  name: 'blob-events'
  scope: rg
  params: {
    name: names.systemTopic
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainerName: containers.deadLetter
  }
}

module alerts 'core/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'ccexport-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    systemTopicId: blobEvents.outputs.id
    alertEmail: alertEmail
    rejectAlertPercent: rejectAlertPercent
    rejectAlertPercentByExport: empty(rejectAlertPercentByExport) ? {} : json(rejectAlertPercentByExport)
    confirmationAlertHours: confirmationAlertHours
  }
}

// azd stores these in .azure/<env>/.env; the postdeploy hook and the README use them.
// None of them is a secret, and none contains a function key.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = blobEvents.outputs.name
output INBOX_CONTAINER string = containers.inbox
output EVENTGRID_DEADLETTER_CONTAINER string = containers.deadLetter
output TASKHUB_NAME string = taskHubName
