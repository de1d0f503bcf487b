# azd postdeploy hook (Windows twin of postdeploy.sh): subscribe the
# `segment_blob_created` blob trigger to the storage account's BlobCreated events
# (infra/eventgrid.bicep).
#
# Why after deploy: Event Grid validates a webhook when the subscription is created,
# and the `blobs_extension` system key in its URL exists only once the host has loaded
# the blob extension, i.e. after the code is deployed and the host has started.
#
# The key is never read here: this script only asks whether it exists, and the
# deployment reads it with listKeys on the Azure side. Nothing prints the webhook URL.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$template = Join-Path $PSScriptRoot '..' 'eventgrid.bicep'

function Fail([string]$message) {
    Write-Error "postdeploy: $message"
    exit 1
}

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_EVENTGRID_SYSTEM_TOPIC_NAME', 'AZURE_STORAGE_ACCOUNT_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Fail "$name is not set (run through azd, or set the azd environment values)"
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Fail "the Azure CLI (az) is needed; install it and run 'az login'"
}
az account show --output none 2>$null
if ($LASTEXITCODE -ne 0) { Fail "the Azure CLI is not signed in; run 'az login' (azd and az keep separate sign-ins)" }

$inbox = if ($env:INBOX_CONTAINER) { $env:INBOX_CONTAINER } else { 'inbox' }
$deadLetter = if ($env:EVENTGRID_DEADLETTER_CONTAINER) { $env:EVENTGRID_DEADLETTER_CONTAINER } else { 'eventgrid-deadletter' }
$attempts = if ($env:POSTDEPLOY_KEY_ATTEMPTS) { [int]$env:POSTDEPLOY_KEY_ATTEMPTS } else { 30 }
$pause = if ($env:POSTDEPLOY_KEY_WAIT_SECONDS) { [int]$env:POSTDEPLOY_KEY_WAIT_SECONDS } else { 10 }

# A request wakes the host when the app has scaled to zero; the answer does not matter.
if ($env:AZURE_FUNCTION_APP_URL) {
    try { Invoke-WebRequest -Uri "$($env:AZURE_FUNCTION_APP_URL)/" -TimeoutSec 30 -UseBasicParsing | Out-Null } catch { }
}

Write-Host "postdeploy: waiting for the blob extension key of $($env:AZURE_FUNCTION_APP_NAME)"
for ($attempt = 1; ; $attempt++) {
    # The query returns true/false only: the key itself never reaches this session.
    $present = az functionapp keys list `
        --resource-group $env:AZURE_RESOURCE_GROUP `
        --name $env:AZURE_FUNCTION_APP_NAME `
        --query 'systemKeys.blobs_extension != null' `
        --output tsv 2>$null
    if ($present -eq 'true') { break }
    if ($attempt -ge $attempts) {
        Fail "the host did not publish the blobs_extension key after $attempts attempts; is the code deployed and the app running? Re-run: azd hooks run postdeploy"
    }
    Start-Sleep -Seconds $pause
}

Write-Host "postdeploy: creating the Event Grid subscription for container '$inbox'"
az deployment group create `
    --resource-group $env:AZURE_RESOURCE_GROUP `
    --name ccexport-eventgrid `
    --template-file $template `
    --parameters `
        "functionAppName=$($env:AZURE_FUNCTION_APP_NAME)" `
        "systemTopicName=$($env:AZURE_EVENTGRID_SYSTEM_TOPIC_NAME)" `
        "storageAccountName=$($env:AZURE_STORAGE_ACCOUNT_NAME)" `
        "inboxContainerName=$inbox" `
        "deadLetterContainerName=$deadLetter" `
    --only-show-errors `
    --output none
if ($LASTEXITCODE -ne 0) { Fail 'the Event Grid deployment failed' }

# Browser sign-in: App Service authentication returns to /.auth/login/aad/callback on
# the app's own address, which exists only now, with an ID token (implicit flow).
if ($env:AUTH_CLIENT_ID -and $env:AZURE_FUNCTION_APP_URL) {
    az ad app update --id $env:AUTH_CLIENT_ID `
        --web-redirect-uris "$($env:AZURE_FUNCTION_APP_URL)/.auth/login/aad/callback" `
        --enable-id-token-issuance true `
        --output none
    if ($LASTEXITCODE -ne 0) { Fail "could not register the sign-in address with the app registration $($env:AUTH_CLIENT_ID)" }
    Write-Host "postdeploy: the console: $($env:AZURE_FUNCTION_APP_URL)/.auth/login/aad?post_login_redirect_uri=/api/console/"
}

Write-Host "postdeploy: blob events from '$inbox' now reach segment_blob_created"
