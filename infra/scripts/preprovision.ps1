# azd preprovision hook (Windows twin of preprovision.sh): the Microsoft Entra app
# registration that signs callers in.
#
# App Service authentication (infra/app/functionapp.bicep, authsettingsV2) accepts
# only tokens issued for this registration, and the app's roles (`admin`,
# `contributor`: infra/auth/app-roles.json) are defined on it. It is created once per
# azd environment and its client id kept as AUTH_CLIENT_ID, which main.parameters.json
# passes to the template. An existing AUTH_CLIENT_ID is used as it is.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$auth = Join-Path $PSScriptRoot '..' 'auth'
$roles = Join-Path $auth 'app-roles.json'

function Fail([string]$message) {
    Write-Error "preprovision: $message"
    exit 1
}

if (-not $env:AZURE_ENV_NAME) { Fail "AZURE_ENV_NAME is not set (run through azd)" }
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Fail "the Azure CLI (az) is needed; install it and run 'az login'"
}
az account show --output none 2>$null
if ($LASTEXITCODE -ne 0) { Fail "the Azure CLI is not signed in; run 'az login' (azd and az keep separate sign-ins)" }

if ($env:AUTH_CLIENT_ID) {
    Write-Host "preprovision: sign-in uses the app registration $($env:AUTH_CLIENT_ID) (AUTH_CLIENT_ID)"
    exit 0
}

$name = "ccexport-$($env:AZURE_ENV_NAME)"
Write-Host "preprovision: creating the app registration $name (sign-in and the roles admin, contributor)"
$clientId = az ad app create --display-name $name --sign-in-audience AzureADMyOrg `
    --app-roles "@$roles" --requested-access-token-version 2 --query appId --output tsv
if ($LASTEXITCODE -ne 0 -or -not $clientId) { Fail "could not create the app registration (you need permission to register applications)" }
az ad app update --id $clientId --identifier-uris "api://$clientId" --output none
if ($LASTEXITCODE -ne 0) { Fail "could not set the identifier URI api://$clientId" }
# The delegated scope people's tokens carry, then the Azure CLI pre-authorised for it
# (a scope must exist before a client is pre-authorised for it).
az ad app update --id $clientId --set "api=@$(Join-Path $auth 'api-scope.json')" --output none
if ($LASTEXITCODE -ne 0) { Fail "could not add the user_impersonation scope" }
az ad app update --id $clientId --set "api=@$(Join-Path $auth 'api-preauthorized.json')" --output none
if ($LASTEXITCODE -ne 0) { Fail "could not pre-authorise the Azure CLI" }
# The service principal (enterprise application) is where people and automation
# clients are assigned the roles.
az ad sp create --id $clientId --output none
if ($LASTEXITCODE -ne 0) { Fail "could not create the service principal of $clientId" }
azd env set AUTH_CLIENT_ID $clientId
if ($LASTEXITCODE -ne 0) { Fail "could not keep AUTH_CLIENT_ID in the azd environment" }
Write-Host "preprovision: created $clientId; assign people the roles in Enterprise applications > $name > Users and groups"
