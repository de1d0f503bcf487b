// Key Vault for the Constant Contact client secret and the OAuth tokens the app
// rotates. Access is Azure RBAC only (no access policies); soft delete is always on
// and purge protection is a parameter, because it is irreversible and blocks
// `azd down --purge` from freeing the vault name.

@description('Key Vault name (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object = {}

@description('Days a deleted vault or secret can be recovered (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Turn purge protection on (irreversible). Recommended for production; off by default so a test environment can be purged.')
param enablePurgeProtection bool = false

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: No firewall rules: a Flex Consumption app without VNet integration has no fixed outbound address to allow. Access is Entra RBAC only.
  // checkov:skip=CKV_AZURE_189: Public network access is needed for the same reason (no private endpoint without VNet integration).
  // checkov:skip=CKV_AZURE_110: Purge protection is the enablePurgeProtection parameter (off by default so a test environment can be purged with `azd down --purge`; turn it on for production).
  // checkov:skip=CKV_AZURE_42: Soft delete is always on; full recoverability also needs purge protection, which is the parameter above.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // The API accepts only true or an absent value: once on, it cannot be turned off.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
