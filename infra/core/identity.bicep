// The one identity the function app uses for everything: host storage, app data,
// deployment package, Key Vault and Application Insights. A user-assigned identity
// exists before the app does, so its role assignments can be in place (and
// propagated) by the time the host first starts.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
