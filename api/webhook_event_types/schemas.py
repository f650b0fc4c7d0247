"""The list of webhook event types."""



from api.lists import ListObject


class WebhookEventTypeList(ListObject[str]):
    pass
