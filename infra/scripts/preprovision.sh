#!/bin/sh
# azd preprovision hook: the Microsoft Entra app registration that signs callers in.
#
# App Service authentication (infra/app/functionapp.bicep, authsettingsV2) accepts
# only tokens issued for this registration, and the app's roles (`admin`,
# `contributor`: infra/auth/app-roles.json) are defined on it. It is created once per
# azd environment and its client id kept as AUTH_CLIENT_ID, which main.parameters.json
# passes to the template. An existing AUTH_CLIENT_ID (set by an earlier run, or by an
# admin who created the registration by hand) is used as it is.
#
# To run it by hand: AZURE_ENV_NAME=<env> sh infra/scripts/preprovision.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
auth="$here/../auth"
roles="$auth/app-roles.json"

fail() {
    echo "preprovision: $*" >&2
    exit 1
}

[ -n "${AZURE_ENV_NAME:-}" ] || fail "AZURE_ENV_NAME is not set (run through azd)"
command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is needed; install it and run 'az login'"
az account show --output none >/dev/null 2>&1 || fail "the Azure CLI is not signed in; run 'az login' (azd and az keep separate sign-ins)"

if [ -n "${AUTH_CLIENT_ID:-}" ]; then
    echo "preprovision: sign-in uses the app registration $AUTH_CLIENT_ID (AUTH_CLIENT_ID)"
    exit 0
fi

name="ccexport-$AZURE_ENV_NAME"
echo "preprovision: creating the app registration $name (sign-in and the roles admin, contributor)"
client_id=$(az ad app create \
    --display-name "$name" \
    --sign-in-audience AzureADMyOrg \
    --app-roles "@$roles" \
    --requested-access-token-version 2 \
    --query appId --output tsv) || fail "could not create the app registration (you need permission to register applications)"
[ -n "$client_id" ] || fail "the app registration was created without a client id"
az ad app update --id "$client_id" --identifier-uris "api://$client_id" --output none \
    || fail "could not set the identifier URI api://$client_id"
# The delegated scope people's tokens carry, then the Azure CLI pre-authorised for it,
# so `az account get-access-token --scope api://<id>/user_impersonation` works without
# a consent prompt (a scope must exist before a client is pre-authorised for it).
az ad app update --id "$client_id" --set "api=@$auth/api-scope.json" --output none \
    || fail "could not add the user_impersonation scope"
az ad app update --id "$client_id" --set "api=@$auth/api-preauthorized.json" --output none \
    || fail "could not pre-authorise the Azure CLI"
# The service principal (enterprise application) is where people and automation
# clients are assigned the roles.
az ad sp create --id "$client_id" --output none \
    || fail "could not create the service principal of $client_id"
azd env set AUTH_CLIENT_ID "$client_id" || fail "could not keep AUTH_CLIENT_ID in the azd environment"
echo "preprovision: created $client_id; assign people the roles in Enterprise applications > $name > Users and groups"
