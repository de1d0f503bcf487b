// Alerts that reach a person: one action group (an e-mail address, when one is given)
// and the rules that call it. The README's "Troubleshooting" has one entry per rule:
// what it means, where to look, what fixes it.
//
// The log rules query Application Insights' `traces` and `requests` tables. Their
// queries are not written here: alert-queries.json holds them, written from
// shared/runs/alerts.py (`python -m shared.runs.alerts > infra/core/alert-queries.json`),
// where each rule's filter is kept once and also evaluated in Python over the records
// real runs write (tests/test_alert_rules.py). This template puts the deployment's
// choices in front of each query as Kusto `let` lines.

@description('Prefix of the rules\' and the action group\'s names.')
param namePrefix string

@description('Azure region of the log alert rules (the resource group\'s).')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Application Insights component the log rules query.')
param applicationInsightsId string

@description('Event Grid system topic whose dead-lettered deliveries alert.')
param systemTopicId string

@description('Where alerts are e-mailed (a person or, better, a shared mailbox). Empty: the action group has no receiver, and fired alerts are seen only in the portal (Monitor > Alerts).')
param alertEmail string = ''

@description('A run alerts when more than this percentage of its segment\'s rows is rejected: a sudden jump in rejects is how a broken upstream column shows.')
@minValue(0)
@maxValue(100)
param rejectAlertPercent int = 5

@description('Per-export overrides of rejectAlertPercent, e.g. {"high-value": 20}.')
param rejectAlertPercentByExport object = {}

@description('A mirror run waiting for its removals to be confirmed alerts after this many hours. At most 36: a log alert looks back two days at most, and the run\'s record must still be in view.')
@minValue(1)
@maxValue(36)
param confirmationAlertHours int = 24

var queries = loadJsonContent('alert-queries.json')

// The Kusto `let` names shared/runs/alerts.py's PARAMETERS lists.
var kqlParameters = 'let RejectPercentDefault = toreal(${rejectAlertPercent});\nlet RejectPercentByExport = dynamic(${string(rejectAlertPercentByExport)});\nlet ConfirmationWait = ${confirmationAlertHours}h;\n'

// What happened is an event (a run ended so): those rules fire on each evaluation that
// finds one and do not resolve (autoMitigate off). A state that lasts (a run still
// waiting, a function still failing) fires once and resolves when it ends.
var logRules = [
  {
    key: 'runFailed'
    displayName: 'ccexport: a run failed, stopped or left contacts undelivered'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    range: 'PT15M'
    autoMitigate: false
  }
  {
    key: 'rejectsAboveShare'
    displayName: 'ccexport: a run rejected more of its rows than allowed'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    range: 'PT15M'
    autoMitigate: false
  }
  {
    key: 'connectionNeedsReconnect'
    displayName: 'ccexport: a connection must be reconnected to Constant Contact'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    range: 'PT15M'
    autoMitigate: false
  }
  {
    key: 'quotaExhausted'
    displayName: 'ccexport: a run ran out of the daily Constant Contact quota'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    range: 'PT15M'
    autoMitigate: false
  }
  {
    key: 'confirmationWaiting'
    displayName: 'ccexport: a mirror run has waited too long for its removals to be confirmed'
    severity: 2
    frequency: 'PT1H'
    window: 'PT1H'
    range: 'P2D'
    autoMitigate: true
  }
  {
    key: 'functionErrors'
    displayName: 'ccexport: function invocations failed'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    range: 'PT15M'
    autoMitigate: true
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-alerts'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'ccexport'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'alert-email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in logRules: {
    name: '${namePrefix}-${rule.key}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: 'See the README, Troubleshooting: what this alert means, where to look, what fixes it.'
      severity: rule.severity
      enabled: true
      scopes: [
        applicationInsightsId
      ]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      overrideQueryTimeRange: rule.range
      autoMitigate: rule.autoMitigate
      criteria: {
        allOf: [
          {
            query: '${kqlParameters}${queries[rule.key].query}'
            timeAggregation: 'Count'
            dimensions: queries[rule.key].dimensions
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

// Event Grid gives up on a blob event after 24 hours of failed deliveries and writes
// it to the dead-letter container: a run may not have started.
resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-deadLettered'
  location: 'global'
  tags: tags
  properties: {
    description: 'ccexport: Event Grid dead-lettered a blob event. See the README, Troubleshooting.'
    severity: 1
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
