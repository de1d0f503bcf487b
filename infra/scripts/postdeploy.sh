#!/bin/sh
# azd postdeploy hook: subscribe the `segment_blob_created` blob trigger to the
# storage account's BlobCreated events (infra/eventgrid.bicep).
#
# Why after deploy: Event Grid validates a webhook when the subscription is created,
# and the `blobs_extension` system key in its URL exists only once the host has loaded
# the blob extension, i.e. after the code is deployed and the host has started.
#
# The key is never read here: this script only asks whether it exists, and the
# deployment reads it with listKeys on the Azure side. Nothing prints the webhook URL.
#
# azd passes the provision outputs as environment variables. To run it by hand:
#   azd env get-values > .env.azd && set -a && . ./.env.azd && set +a && sh infra/scripts/postdeploy.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template="$here/../eventgrid.bicep"

fail() {
    echo "postdeploy: $*" >&2
    exit 1
}

require() {
    eval "value=\${$1:-}"
    [ -n "$value" ] || fail "$1 is not set (run through azd, or export the azd environment values)"
}

for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_EVENTGRID_SYSTEM_TOPIC_NAME AZURE_STORAGE_ACCOUNT_NAME; do
    require "$name"
done

command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is needed; install it and run 'az login'"
az account show --output none >/dev/null 2>&1 || fail "the Azure CLI is not signed in; run 'az login' (azd and az keep separate sign-ins)"

inbox="${INBOX_CONTAINER:-inbox}"
dead_letter="${EVENTGRID_DEADLETTER_CONTAINER:-eventgrid-deadletter}"
attempts="${POSTDEPLOY_KEY_ATTEMPTS:-30}"
pause="${POSTDEPLOY_KEY_WAIT_SECONDS:-10}"

# A request wakes the host when the app has scaled to zero; the answer does not matter.
if [ -n "${AZURE_FUNCTION_APP_URL:-}" ] && command -v curl >/dev/null 2>&1; then
    curl --silent --output /dev/null --max-time 30 "$AZURE_FUNCTION_APP_URL/" || true
fi

echo "postdeploy: waiting for the blob extension key of $AZURE_FUNCTION_APP_NAME"
attempt=1
while :; do
    # The query returns true/false only: the key itself never reaches this shell.
    present=$(az functionapp keys list \
        --resource-group "$AZURE_RESOURCE_GROUP" \
        --name "$AZURE_FUNCTION_APP_NAME" \
        --query "systemKeys.blobs_extension != null" \
        --output tsv 2>/dev/null || echo false)
    [ "$present" = "true" ] && break
    [ "$attempt" -ge "$attempts" ] && fail "the host did not publish the blobs_extension key after $attempts attempts; is the code deployed and the app running? Re-run: azd hooks run postdeploy"
    attempt=$((attempt + 1))
    sleep "$pause"
done

echo "postdeploy: creating the Event Grid subscription for container '$inbox'"
az deployment group create \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name ccexport-eventgrid \
    --template-file "$template" \
    --parameters \
        functionAppName="$AZURE_FUNCTION_APP_NAME" \
        systemTopicName="$AZURE_EVENTGRID_SYSTEM_TOPIC_NAME" \
        storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
        inboxContainerName="$inbox" \
        deadLetterContainerName="$dead_letter" \
    --only-show-errors \
    --output none

echo "postdeploy: blob events from '$inbox' now reach segment_blob_created"

# Browser sign-in (an admin opening the connect page): App Service authentication
# returns to /.auth/login/aad/callback on the app's own address, which exists only
# now, with an ID token (the implicit flow: the app holds no client secret).
if [ -n "${AUTH_CLIENT_ID:-}" ] && [ -n "${AZURE_FUNCTION_APP_URL:-}" ]; then
    az ad app update --id "$AUTH_CLIENT_ID" \
        --web-redirect-uris "$AZURE_FUNCTION_APP_URL/.auth/login/aad/callback" \
        --enable-id-token-issuance true \
        --output none || fail "could not register the sign-in address with the app registration $AUTH_CLIENT_ID"
    echo "postdeploy: the console: $AZURE_FUNCTION_APP_URL/.auth/login/aad?post_login_redirect_uri=/api/console/"
fi
